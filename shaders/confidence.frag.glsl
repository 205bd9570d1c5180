#include "prelude.glsl"
#include "tensor_layout.glsl"
// Confidence masks at output resolution: OpenCV INTER_LINEAR (generic path) of the activated
// planes, one fragment per output pixel, PASS_OUTPUTS (<= 8) channels per pass starting at
// channel FIRST_GROUP * LANES, each written to its own R32F attachment.
// u_resize_x / u_resize_y hold (i0, i1, w0, w1) per output column / row, computed on the CPU in
// OpenCV's precision (gpu_seg.sampling.resize_taps); i1 < 0 means one tap: the value is S[i0].
// As in OpenCV, each row is interpolated horizontally, then the two rows vertically.
#define FIRST_GROUP {{FIRST_GROUP}}
#define PASS_OUTPUTS {{PASS_OUTPUTS}}
const int PASS_GROUPS = (PASS_OUTPUTS + LANES - 1) / LANES;

uniform sampler2D u_source;
uniform sampler2D u_resize_x;
uniform sampler2D u_resize_y;

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

// Horizontal interpolation of group n on the row whose two taps start at b0 and b1.
vec4 row_value(ivec2 b0, ivec2 b1, bool single, vec2 w, int n) {
    vec4 s0 = texelFetch(u_source, b0 + ivec2(n, 0), 0);
    if (single) return s0;
    vec4 s1 = texelFetch(u_source, b1 + ivec2(n, 0), 0);
    PRECISE vec4 h = s0 * w.x + s1 * w.y;
    return h;
}

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec4 tx = texelFetch(u_resize_x, ivec2(p.x, 0), 0);
    vec4 ty = texelFetch(u_resize_y, ivec2(p.y, 0), 0);
    int x0 = int(tx.x);
    int x1 = tx.y < 0.0 ? x0 : int(tx.y);
    int y0 = int(ty.x);
    int y1 = ty.y < 0.0 ? y0 : int(ty.y);
    bool single_x = tx.y < 0.0;
    bool single_y = ty.y < 0.0;
    ivec2 b00 = tensor_base(x0, y0);
    ivec2 b10 = tensor_base(x1, y0);
    ivec2 b01 = tensor_base(x0, y1);
    ivec2 b11 = tensor_base(x1, y1);

    float v[8];
    for (int g = 0; g < PASS_GROUPS; ++g) {
        int n = FIRST_GROUP + g;
        vec4 h0 = row_value(b00, b10, single_x, tx.zw, n);
        vec4 r = h0;
        if (!single_y) {
            vec4 h1 = row_value(b01, b11, single_x, tx.zw, n);
            PRECISE vec4 s = h0 * ty.z + h1 * ty.w;
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
