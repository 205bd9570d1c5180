#include "prelude.glsl"
#include "tensor_layout.glsl"
// Softmax statistics at tensor resolution, one value per tensor pixel (fragment form
// softmax_stats.frag.glsl, compute form softmax_stats.comp.glsl: the same function):
//   x = the first maximum over the channels (a NaN in channel 0 stays, later NaNs are skipped,
//       as std::max_element does), y = sum of exp(v - max), accumulated in channel order.

uniform sampler2D u_tensor;

vec4 texel_value(ivec2 p) {
    ivec2 base = tensor_base(p.x, p.y);
    float peak = texelFetch(u_tensor, base, 0).x;
    for (int n = 0; n < GROUPS; ++n) {
        vec4 v = texelFetch(u_tensor, base + ivec2(n, 0), 0);
        for (int k = 0; k < LANES; ++k) {
            if (is_channel(n, k) && takes_over(peak, v[k])) peak = v[k];
        }
    }
    PRECISE float total = 0.0;
    for (int n = 0; n < GROUPS; ++n) {
        vec4 e = exp(texelFetch(u_tensor, base + ivec2(n, 0), 0) - peak);
        for (int k = 0; k < LANES; ++k) {
            if (is_channel(n, k)) total += e[k];
        }
    }
    return vec4(peak, total, 0.0, 0.0);
}
