#include "prelude.glsl"
#include "tensor_layout.glsl"
// Category mask at output resolution, one fragment per output pixel, from the RAW logits:
// align-corners bilinear interpolation, vertical lerp first, a + (b - a) * t, with the taps and
// weights from u_cat_x / u_cat_y = (i0, i1, t) per output column / row
// (gpu_seg.sampling.align_corners_taps); sigmoid when ACTIVATION == 1 (softmax is skipped: it
// keeps the argmax); then one class: 0 if value > 0.5 else 255; several classes: index of the
// first maximum (see takes_over: ties keep the lowest index, a NaN never takes over),
// modulo 256.
#define ACTIVATION {{ACTIVATION}}

uniform sampler2D u_tensor;
uniform sampler2D u_cat_x;
uniform sampler2D u_cat_y;
out uint o_category;

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec3 mx = texelFetch(u_cat_x, ivec2(p.x, 0), 0).xyz;
    vec3 my = texelFetch(u_cat_y, ivec2(p.y, 0), 0).xyz;
    int x0 = int(mx.x);
    int x1 = int(mx.y);
    int y0 = int(my.x);
    int y1 = int(my.y);
    float t1 = mx.z;
    float t0 = my.z;
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
