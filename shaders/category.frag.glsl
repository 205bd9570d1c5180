#include "prelude.glsl"
#include "tensor_layout.glsl"
// Category mask at output resolution, one fragment per output pixel, from the RAW logits:
// align-corners bilinear interpolation, vertical lerp first, a + (b - a) * t; sigmoid when
// ACTIVATION == 1 (softmax is skipped: it keeps the argmax); then one class: 0 if value > 0.5
// else 255; several classes: index of the first maximum (see takes_over: ties keep the lowest
// index, a NaN never takes over), modulo 256.
// The taps are computed here in float32 exactly as gpu_seg.sampling.align_corners_taps does
// (u_scale = float32(in - 1) / float32(out - 1), or 0 for an output of one pixel); PRECISE keeps
// the compiler from fusing the multiplication into the subtraction. Drawn full-screen, or only
// over the cells whose class is not certain (rectangles.vert.glsl, see cell_class.frag.glsl).
#define ACTIVATION {{ACTIVATION}}

uniform sampler2D u_tensor;
uniform float u_scale_x;
uniform float u_scale_y;
out uint o_category;

void main() {
    PRECISE vec2 pos = vec2(ivec2(gl_FragCoord.xy)) * vec2(u_scale_x, u_scale_y);
    vec2 start = max(floor(pos), 0.0);
    ivec2 p0 = ivec2(start);
    ivec2 p1 = ivec2(min(ceil(pos), vec2(TENSOR_W - 1, TENSOR_H - 1)));
    PRECISE vec2 t = clamp(pos - start, 0.0, 1.0);
    int x0 = p0.x;
    int x1 = p1.x;
    int y0 = p0.y;
    int y1 = p1.y;
    float t1 = t.x;
    float t0 = t.y;
    ivec2 b00 = tensor_base(x0, y0);
    ivec2 b01 = tensor_base(x0, y1);
    ivec2 b10 = tensor_base(x1, y0);
    ivec2 b11 = tensor_base(x1, y1);

    float best = 0.0;
    int index = 0;
    float first = 0.0;
    for (int n = 0; n < GROUPS; ++n) {
        ivec2 dn = ivec2(n, 0);
        vec4 a = texelFetch(u_tensor, b00 + dn, 0);
        vec4 b = texelFetch(u_tensor, b01 + dn, 0);
        vec4 c = texelFetch(u_tensor, b10 + dn, 0);
        vec4 d = texelFetch(u_tensor, b11 + dn, 0);
        PRECISE vec4 left = a + (b - a) * t0;
        PRECISE vec4 right = c + (d - c) * t0;
        PRECISE vec4 v = left + (right - left) * t1;
#if ACTIVATION == 1
        PRECISE vec4 s = 1.0 / (1.0 + exp(-v));
        v = s;
#endif
        for (int k = 0; k < LANES; ++k) {
            int channel = n * LANES + k;
            if (channel == 0) {
                best = v[k];
                first = v[k];
            } else if (channel < CHANNELS && takes_over(best, v[k])) {
                best = v[k];
                index = channel;
            }
        }
    }
#if {{ONE_CLASS}}
    o_category = (!is_nan(first) && first > 0.5) ? 0u : 255u;
#else
    o_category = uint(index & 255);
#endif
}
