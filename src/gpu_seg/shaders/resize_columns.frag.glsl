#include "prelude.glsl"
#include "encode.glsl"
// Confidence masks, step 2 of 2: the horizontally resampled rows (resize_rows.frag.glsl) blended
// vertically, h(y0) * w0 + h(y1) * w1 as OpenCV does, PASS_OUTPUTS (<= 8) masks per pass, each to
// its own attachment, stored as OUTPUT_FORMAT says (encode.glsl).
// SELECT 0: the masks are the channels of groups FIRST_GROUP.. of the chunk in the rows texture;
// FIRST_GROUP is a constant, or the uniform u_first_group when the template gets -1 (a plan with
// many passes then needs one program instead of one per pass).
// SELECT 1: mask k is channel u_channel[k] (any subset, any order); its group's rows start at
// row (u_channel[k] / LANES) * TENSOR_H (the whole tensor is in one chunk then).
// u_taps = (y0, y1, w0, w1) per output row; y1 < 0 means one tap. Row indices are already clamped
// (OpenCV keeps the fractional weights at the borders).
const int TENSOR_H = {{TENSOR_H}};
const int LANES = {{LANES}};
#define FIRST_GROUP_CONSTANT {{FIRST_GROUP}}
#define PASS_OUTPUTS {{PASS_OUTPUTS}}
#define SELECT {{SELECT}}
const int PASS_GROUPS = (PASS_OUTPUTS + LANES - 1) / LANES;

uniform sampler2D u_rows;
uniform sampler2D u_taps;
#if FIRST_GROUP_CONSTANT < 0
uniform int u_first_group;
#define FIRST_GROUP u_first_group
#else
#define FIRST_GROUP FIRST_GROUP_CONSTANT
#endif
#if SELECT
uniform int u_channel[PASS_OUTPUTS];
#endif

layout(location = 0) out OUT_TYPE o0;
#if PASS_OUTPUTS > 1
layout(location = 1) out OUT_TYPE o1;
#endif
#if PASS_OUTPUTS > 2
layout(location = 2) out OUT_TYPE o2;
#endif
#if PASS_OUTPUTS > 3
layout(location = 3) out OUT_TYPE o3;
#endif
#if PASS_OUTPUTS > 4
layout(location = 4) out OUT_TYPE o4;
#endif
#if PASS_OUTPUTS > 5
layout(location = 5) out OUT_TYPE o5;
#endif
#if PASS_OUTPUTS > 6
layout(location = 6) out OUT_TYPE o6;
#endif
#if PASS_OUTPUTS > 7
layout(location = 7) out OUT_TYPE o7;
#endif

void main() {
    int x = int(gl_FragCoord.x);
    vec4 v_taps = texelFetch(u_taps, ivec2(gl_FragCoord.y, 0), 0);
    int y0 = int(v_taps.x);
    int y1 = int(v_taps.y);
    float v[8];
#if SELECT
    for (int k = 0; k < PASS_OUTPUTS; ++k) {
        int channel = u_channel[k];
        int row = (channel / LANES) * TENSOR_H;
        float r = texelFetch(u_rows, ivec2(x, row + y0), 0)[channel % LANES];
        if (y1 >= 0) {
            float h1 = texelFetch(u_rows, ivec2(x, row + y1), 0)[channel % LANES];
            PRECISE float s = r * v_taps.z + h1 * v_taps.w;
            r = s;
        }
        v[k] = r;
    }
#else
    for (int g = 0; g < PASS_GROUPS; ++g) {
        int row = (FIRST_GROUP + g) * TENSOR_H;
        vec4 r = texelFetch(u_rows, ivec2(x, row + y0), 0);
        if (y1 >= 0) {
            vec4 h1 = texelFetch(u_rows, ivec2(x, row + y1), 0);
            PRECISE vec4 s = r * v_taps.z + h1 * v_taps.w;
            r = s;
        }
        for (int k = 0; k < LANES; ++k) {
            int j = g * LANES + k;
            if (j < 8) v[j] = r[k];
        }
    }
#endif
    o0 = encode(v[0]);
#if PASS_OUTPUTS > 1
    o1 = encode(v[1]);
#endif
#if PASS_OUTPUTS > 2
    o2 = encode(v[2]);
#endif
#if PASS_OUTPUTS > 3
    o3 = encode(v[3]);
#endif
#if PASS_OUTPUTS > 4
    o4 = encode(v[4]);
#endif
#if PASS_OUTPUTS > 5
    o5 = encode(v[5]);
#endif
#if PASS_OUTPUTS > 6
    o6 = encode(v[6]);
#endif
#if PASS_OUTPUTS > 7
    o7 = encode(v[7]);
#endif
}
