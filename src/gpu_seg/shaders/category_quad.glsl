// The category computation shared by category.frag.glsl and category.comp.glsl (see there).
// Needs prelude.glsl and tensor_layout.glsl first.
#define ACTIVATION {{ACTIVATION}}
#define ONE_CLASS {{ONE_CLASS}}
#define COLUMNS {{COLUMNS}}

uniform sampler2D u_tensor;
uniform float u_scale_x;
uniform float u_scale_y;
uniform int u_width;

// Per pixel: best value so far, its channel, and the value of channel 0 (one-class threshold).
float best[4];
int index[4];
float first[4];

// One class: 0 where the value is above the threshold. For sigmoid the logit is compared with
// 3 * 2^-25 (bits 0x33C00000), where MediaPipe's float32 1 / (1 + expf(-v)) exceeds 0.5 exactly
// (gpu_seg.reference.SIGMOID_ONE_CLASS_THRESHOLD): no exp, whose rounding moves that threshold.
#if ONE_CLASS && ACTIVATION == 1
#define ONE_CLASS_THRESHOLD uintBitsToFloat(0x33C00000u)
#else
#define ONE_CLASS_THRESHOLD 0.5
#endif

void take(int i, int n, vec4 v) {
#if ACTIVATION == 1 && !ONE_CLASS
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

// The 4 packed pixels (byte i = pixel 4 * quad + i) of output row ``row``.
uint category_quad(int row, int quad) {
    int column = quad * 4;
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
        uint value = (!is_nan(first[i]) && first[i] > ONE_CLASS_THRESHOLD) ? 0u : 255u;
#else
        uint value = uint(index[i] & 255);
#endif
        if (i < pixels) bits |= value << (8 * i);
    }
    return bits;
}
