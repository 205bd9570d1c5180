#include "prelude.glsl"
#include "tensor_layout.glsl"
// Category shortcut, step 1 of 2 (at tensor resolution, one fragment per texel (x, y)):
// o_texel = (class, lead, scale, 0), combined per input cell by cell_uniform.frag.glsl.
//   class: the first maximum (one channel: 0 above the threshold, else 255), or -1 ("unsure")
//          when a value is NaN, infinite or above HUGE (b - a could overflow); exact in float32.
//   lead:  best - runner-up, the runner-up being the largest other channel, so an exact tie is
//          a lead of 0 (one channel: |value - threshold|).
//   scale: max(1, largest |value| of the texel).
//
// The rule (cell_uniform.frag.glsl): cell {y, y+1} x {x, x+1} (clamped) gets class k when its
// four corners all have class k and min(lead) > MARGIN * B, where B = max(scale) = max(1, the
// largest |value| anywhere in the cell) and MARGIN = 2^-14. Otherwise it is unsure and its
// pixels are interpolated one by one.
//
// Why that is exact (proof). Every output pixel whose align-corners taps start at this cell
// reads only its four corners, and MediaPipe (reference.py) computes the pixel's values with
// three float32 lerps a + (b - a) * t, t in [0, 1]: two vertical, then a horizontal one on their
// results; class = first maximum. Let u = 2^-24 (unit roundoff).
// 1. Exact values: every channel's exact bilinear value s_c is a convex combination of its four
//    corner values with the same weights for all channels, so s_k - s_j is that combination of
//    the corner leads. The lead computed here is best - runner rounded once (|best - runner| <=
//    2B, so off by <= 2Bu from the exact lead; "+, -, *" are correctly rounded in GLSL), hence
//    s_k - s_j > MARGIN * B - 2Bu for every j != k.
// 2. Rounding: one lerp of values of magnitude <= B errs by at most u (2 |b - a| t + |result|)
//    <= 5Bu (b - a, its product with t and the sum round once each). The vertical lerps are
//    within 5Bu of exact; the horizontal lerp of those is within 5Bu (a convex combination of
//    the perturbed inputs) plus its own rounding, 5B(1 + 5u)u: every computed value is within
//    11Bu of s_c.
// 3. So the computed v_k - v_j > MARGIN * B - 24Bu > 0: k is strictly ahead of every other
//    channel, hence the first maximum whatever the channel order. The whole cell is class k.
//    (The bounds are first order in u; MARGIN = 2^-14 is over 40 times 24u, which covers the
//    rest.)
// One class: the same with the threshold in place of s_j: every computed value lies on the
// corners' side of the threshold, more than MARGIN * B - 13Bu from it (threshold 0.5, or 3 * 2^-25
// for sigmoid: MediaPipe's float32 sigmoid is > 0.5 exactly when v > 3 * 2^-25, see
// gpu_seg.reference.SIGMOID_ONE_CLASS_THRESHOLD).
// GPU arithmetic: the leads and the margin are computed under PRECISE (none is a multiply-add a
// compiler could contract into fma anyway, so GLSL 3.30 is safe too), and a GPU that
// flushes subnormals to zero moves a value by < 2^-126, far below MARGIN * B >= 2^-14 (an order
// it gets wrong among subnormals comes with a lead below that, so the cell is unsure anyway).
// Why the rule must be this strict (see tests/test_category_shortcut.py):
//   - exact ties at some corners are not enough: float32 lerp is not monotone in its first
//     argument, so a lead of a few ulp at the other corners can turn into a loss;
//   - a margin per texel is not enough: near t = 1 the lerp from a huge corner a to a small
//     one b errs by about ulp(a), far more than b's own margin; hence B over the whole cell.
// Multi-class sigmoid can turn distinct large logits into equal probabilities (sigmoid saturates
// to 1.0 in float32), which breaks the strict order: the shortcut is not used for it.
#define ACTIVATION {{ACTIVATION}}
#define ONE_CLASS {{ONE_CLASS}}
const float HUGE = 1.0e30;
const vec4 UNSURE = vec4(-1.0, 0.0, 1.0, 0.0);

uniform sampler2D u_tensor;
out vec4 o_texel;

bool unsure_value(float v) {
    return is_nan(v) || abs(v) > HUGE;
}

vec4 texel_class(ivec2 base) {
#if ONE_CLASS
    float v = texelFetch(u_tensor, base, 0).x;
    if (unsure_value(v)) return UNSURE;
#if ACTIVATION == 1
    float threshold = uintBitsToFloat(0x33C00000u);  // 3 * 2^-25: sigmoid(v) > 0.5 <=> v > it
#else
    const float threshold = 0.5;
#endif
    PRECISE float lead = abs(v - threshold);
    return vec4(v > threshold ? 0.0 : 255.0, lead, max(1.0, abs(v)), 0.0);
#else
    // One pass over the channels: best = first maximum, runner = largest of the others (an exact
    // tie with best included, so that it counts as no lead).
    float best = texelFetch(u_tensor, base, 0).x;
    int index = 0;
    float runner = -HUGE;
    float scale = max(1.0, abs(best));
    bool unsure = unsure_value(best);
    for (int n = 0; n < GROUPS; ++n) {
        vec4 v = texelFetch(u_tensor, base + ivec2(n, 0), 0);
        for (int k = 0; k < LANES; ++k) {
            if (!is_channel(n, k) || n + k == 0) continue;
            float x = v[k];
            unsure = unsure || unsure_value(x);
            scale = max(scale, abs(x));
            if (best < x) {
                runner = best;  // the previous best is ahead of every earlier channel
                best = x;
                index = n * LANES + k;
            } else if (runner < x) {
                runner = x;
            }
        }
    }
    if (unsure) return UNSURE;
    PRECISE float lead = best - runner;  // both within HUGE: no overflow
    return vec4(float(index), lead, scale, 0.0);
#endif
}

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    o_texel = texel_class(tensor_base(p.x, p.y));
}
