#include "prelude.glsl"
#include "tensor_layout.glsl"
// Activation at tensor resolution, written in the tensor's own layout (one value per texel; the
// fragment form is activate.frag.glsl, the compute form activate.comp.glsl: the same function).
// ACTIVATION 1 = sigmoid 1 / (1 + exp(-x)); 2 = softmax exp(v - max) / sum, with the max and
// sum from softmax_stats. Padding lanes and texels are written as 0.
#define ACTIVATION {{ACTIVATION}}

uniform sampler2D u_tensor;
#if ACTIVATION == 2
uniform sampler2D u_stats;
#endif

vec4 texel_value(ivec2 t) {
    ivec3 owner = texel_owner(t);
    if (owner.x < 0) return vec4(0.0);
    vec4 v = texelFetch(u_tensor, t, 0);
#if ACTIVATION == 1
    PRECISE vec4 a = 1.0 / (1.0 + exp(-v));
#else
    vec2 stats = texelFetch(u_stats, owner.xy, 0).xy;
    PRECISE vec4 a = exp(v - stats.x) / stats.y;
#endif
    for (int k = 0; k < LANES; ++k) {
        if (!is_channel(owner.z, k)) a[k] = 0.0;
    }
    return a;
}
