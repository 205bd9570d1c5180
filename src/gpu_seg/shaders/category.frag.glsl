#include "prelude.glsl"
#include "tensor_layout.glsl"
// Category mask at output resolution from the RAW logits: align-corners bilinear interpolation,
// vertical lerp first, a + (b - a) * t; sigmoid when ACTIVATION == 1 (softmax is skipped: it keeps
// the argmax); then one class: 0 if value > 0.5 else 255; several classes: index of the first
// maximum (see takes_over: ties keep the lowest index, a NaN never takes over), modulo 256.
//
// One fragment computes 4 horizontally adjacent output pixels and writes them packed into one
// R32UI texel (byte i = pixel 4x + i, so the texture's memory is the mask's rows). The taps are
// computed in float32 exactly as gpu_seg.sampling.align_corners_taps does (u_scale = float32(in -
// 1) / float32(out - 1), or 0 for an output of one pixel); PRECISE keeps the compiler from fusing
// the multiplication into the subtraction. When the 4 pixels span at most COLUMNS input columns
// (COLUMNS > 0, computed on the CPU from the scale: upscaling), each column's vertical lerp is
// computed once and shared: MediaPipe's per-pixel formula computes the same value for each pixel
// that uses it. Otherwise (COLUMNS == 0) every pixel fetches its own four taps. Drawn full-screen,
// or only over the blocks whose class is not certain (rectangles.vert.glsl, cell_class.frag.glsl).
#define ACTIVATION {{ACTIVATION}}
#define ONE_CLASS {{ONE_CLASS}}
#define COLUMNS {{COLUMNS}}

uniform sampler2D u_tensor;
uniform float u_scale_x;
uniform float u_scale_y;
uniform int u_width;
out uint o_category;

// Per pixel: best value so far, its channel, and the value of channel 0 (one-class threshold).
float best[4];
int index[4];
float first[4];

void take(int i, int n, vec4 v) {
#if ACTIVATION == 1
    PRECISE vec4 s = 1.0 / (1.0 + exp(-v));
    v = s;
#endif
    for (int k = 0; k < LANES; ++k) {
        int channel = n * LANES + k;
        if (channel == 0) {
            best[i] = v[k];
            first[i] = v[k];
        } else if (channel < CHANNELS && takes_over(best[i], v[k])) {
            best[i] = v[k];
            index[i] = channel;
        }
    }
}

void main() {
    int row = int(gl_FragCoord.y);
    int column = int(gl_FragCoord.x) * 4;
    PRECISE float y = float(row) * u_scale_y;
    float y_start = max(floor(y), 0.0);
    int y0 = int(y_start);
    int y1 = int(min(ceil(y), float(TENSOR_H - 1)));
    PRECISE float t0 = clamp(y - y_start, 0.0, 1.0);

    int x0[4];
    int x1[4];
    float t1[4];
    int pixels = min(4, u_width - column);
    for (int i = 0; i < 4; ++i) {
        int c = min(column + i, u_width - 1);
        PRECISE float x = float(c) * u_scale_x;
        float x_start = max(floor(x), 0.0);
        x0[i] = int(x_start);
        x1[i] = int(min(ceil(x), float(TENSOR_W - 1)));
        PRECISE float t = clamp(x - x_start, 0.0, 1.0);
        t1[i] = t;
        best[i] = 0.0;
        index[i] = 0;
        first[i] = 0.0;
    }

    for (int n = 0; n < GROUPS; ++n) {
        ivec2 dn = ivec2(n, 0);
#if COLUMNS > 0
        int base = x0[0];
        vec4 lerped[COLUMNS];
        for (int k = 0; k < COLUMNS; ++k) {
            int x = min(base + k, TENSOR_W - 1);
            vec4 a = texelFetch(u_tensor, tensor_base(x, y0) + dn, 0);
            vec4 b = texelFetch(u_tensor, tensor_base(x, y1) + dn, 0);
            PRECISE vec4 v = a + (b - a) * t0;
            lerped[k] = v;
        }
        for (int i = 0; i < 4; ++i) {
            vec4 left = lerped[0];
            vec4 right = lerped[0];
            for (int k = 1; k < COLUMNS; ++k) {
                if (x0[i] - base == k) left = lerped[k];
                if (x1[i] - base == k) right = lerped[k];
            }
            PRECISE vec4 v = left + (right - left) * t1[i];
            take(i, n, v);
        }
#else
        for (int i = 0; i < 4; ++i) {
            vec4 a = texelFetch(u_tensor, tensor_base(x0[i], y0) + dn, 0);
            vec4 b = texelFetch(u_tensor, tensor_base(x0[i], y1) + dn, 0);
            vec4 c = texelFetch(u_tensor, tensor_base(x1[i], y0) + dn, 0);
            vec4 d = texelFetch(u_tensor, tensor_base(x1[i], y1) + dn, 0);
            PRECISE vec4 left = a + (b - a) * t0;
            PRECISE vec4 right = c + (d - c) * t0;
            PRECISE vec4 v = left + (right - left) * t1[i];
            take(i, n, v);
        }
#endif
    }
    uint bits = 0u;
    for (int i = 0; i < 4; ++i) {
#if ONE_CLASS
        uint value = (!is_nan(first[i]) && first[i] > 0.5) ? 0u : 255u;
#else
        uint value = uint(index[i] & 255);
#endif
        if (i < pixels) bits |= value << (8 * i);
    }
    o_category = bits;
}
