#include "prelude.glsl"
#include "tensor_layout.glsl"
// Category shortcut, step 1 of 2 (at tensor resolution, one fragment per texel (x, y)): the class
// every convex combination of this texel's logits with those of other texels of the same class is
// sure to get, or -1 when unsure.
//
// Why this is enough (proof). Let k be the first maximum at each of the four corners of an input
// cell, strictly ahead of every lower index: v_k > v_j for j < k and v_k >= v_j for j > k. The
// category pass interpolates s = sum_i w_i v(i) with w_i >= 0, sum w_i = 1. Then
// s_k - s_j = sum_i w_i (v_k(i) - v_j(i)) is > 0 for j < k and >= 0 for j > k, so k is the first
// maximum of s too. With align-corners mapping every output pixel whose (y0, x0) is this cell
// reads exactly these four corners, so the whole cell gets class k.
// Floating point: s is computed with three lerps, each off by a few ulp of the largest corner
// value. Requiring the gaps to exceed MARGIN * max(1, |v|) (far above that rounding) keeps the
// argument valid; exact ties with a higher index stay ties in s (same operations on equal
// inputs), so they are allowed. Non-finite or huge values (b - a could overflow) are "unsure".
// One class: the threshold (value > 0.5, or sigmoid(value) > 0.5, i.e. value > 0) is monotone in
// s, so the same argument holds with a margin around the threshold.
// Multi-class sigmoid can turn distinct large logits into equal probabilities (sigmoid saturates
// to 1.0 in float32), which breaks the strict inequality: the shortcut is not used for it.
#define ACTIVATION {{ACTIVATION}}
#define ONE_CLASS {{ONE_CLASS}}
const float MARGIN = 1.0 / 16384.0;
const float HUGE = 1.0e30;

uniform sampler2D u_tensor;
out int o_class;

bool unsure_value(float v) {
    return is_nan(v) || abs(v) > HUGE;
}

int texel_class(ivec2 base) {
#if ONE_CLASS
    float v = texelFetch(u_tensor, base, 0).x;
    if (unsure_value(v)) return -1;
#if ACTIVATION == 1
    const float threshold = 0.0;  // sigmoid(v) > 0.5 <=> v > 0
#else
    const float threshold = 0.5;
#endif
    float margin = MARGIN * max(1.0, abs(v));
    if (v > threshold + margin) return 0;
    if (v < threshold - margin) return 255;
    return -1;
#else
    // One pass over the channels: k = first maximum; below = max of the values before k;
    // above = max of the values after k that are not exact ties with it.
    float best = texelFetch(u_tensor, base, 0).x;
    int index = 0;
    float below = -HUGE;
    float above = -HUGE;
    float biggest = 0.0;
    bool unsure = false;
    for (int n = 0; n < GROUPS; ++n) {
        vec4 v = texelFetch(u_tensor, base + ivec2(n, 0), 0);
        for (int k = 0; k < LANES; ++k) {
            if (!is_channel(n, k)) continue;
            float x = v[k];
            unsure = unsure || unsure_value(x);
            biggest = max(biggest, abs(x));
            if (x > best) {
                below = best;  // best was the running maximum, so it is the largest value before k
                above = -HUGE;
                best = x;
                index = n * LANES + k;
            } else if (x < best) {
                above = max(above, x);
            }
        }
    }
    float margin = MARGIN * max(1.0, biggest);
    bool clear = index == 0 || best - below > margin;
    clear = clear && best - above > margin;
    return (unsure || !clear) ? -1 : index;
#endif
}

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    o_class = texel_class(tensor_base(p.x, p.y));
}
