#include "prelude.glsl"
// Confidence masks, step 2 of 2: the horizontally resampled rows (resize_rows.frag.glsl) blended
// vertically, h(y0) * w0 + h(y1) * w1 as OpenCV does, PASS_OUTPUTS (<= 8) channels per pass
// starting at group FIRST_GROUP of the chunk, each channel to its own R32F attachment.
// u_taps = (y0, y1, w0, w1) per output row; y1 < 0 means one tap. Row indices are already clamped
// (OpenCV keeps the fractional weights at the borders).
const int TENSOR_H = {{TENSOR_H}};
const int LANES = {{LANES}};
#define FIRST_GROUP {{FIRST_GROUP}}
#define PASS_OUTPUTS {{PASS_OUTPUTS}}
const int PASS_GROUPS = (PASS_OUTPUTS + LANES - 1) / LANES;

uniform sampler2D u_rows;
uniform sampler2D u_taps;

layout(location = 0) out float o0;
#if PASS_OUTPUTS > 1
layout(location = 1) out float o1;
#endif
#if PASS_OUTPUTS > 2
layout(location = 2) out float o2;
#endif
#if PASS_OUTPUTS > 3
layout(location = 3) out float o3;
#endif
#if PASS_OUTPUTS > 4
layout(location = 4) out float o4;
#endif
#if PASS_OUTPUTS > 5
layout(location = 5) out float o5;
#endif
#if PASS_OUTPUTS > 6
layout(location = 6) out float o6;
#endif
#if PASS_OUTPUTS > 7
layout(location = 7) out float o7;
#endif

void main() {
    int x = int(gl_FragCoord.x);
    vec4 v_taps = texelFetch(u_taps, ivec2(gl_FragCoord.y, 0), 0);
    int y0 = int(v_taps.x);
    int y1 = int(v_taps.y);
    float v[8];
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
    o0 = v[0];
#if PASS_OUTPUTS > 1
    o1 = v[1];
#endif
#if PASS_OUTPUTS > 2
    o2 = v[2];
#endif
#if PASS_OUTPUTS > 3
    o3 = v[3];
#endif
#if PASS_OUTPUTS > 4
    o4 = v[4];
#endif
#if PASS_OUTPUTS > 5
    o5 = v[5];
#endif
#if PASS_OUTPUTS > 6
    o6 = v[6];
#endif
#if PASS_OUTPUTS > 7
    o7 = v[7];
#endif
}
