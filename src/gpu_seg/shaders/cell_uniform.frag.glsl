#include "prelude.glsl"
// Category shortcut, step 2 of 2 (one fragment per input cell (x, y), the cell whose corners are
// texels (x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1), clamped to the tensor): the class every
// output pixel of the cell is sure to get, or -1. The rule and its proof: cell_class.frag.glsl.
const int TENSOR_W = {{TENSOR_W}};
const int TENSOR_H = {{TENSOR_H}};
const float MARGIN = 1.0 / 16384.0;

uniform sampler2D u_texels;  // (class, lead, scale, 0) per texel, from cell_class.frag.glsl
out int o_class;

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    ivec2 q = min(p + 1, ivec2(TENSOR_W - 1, TENSOR_H - 1));
    vec4 a = texelFetch(u_texels, p, 0);
    vec4 b = texelFetch(u_texels, ivec2(q.x, p.y), 0);
    vec4 c = texelFetch(u_texels, ivec2(p.x, q.y), 0);
    vec4 d = texelFetch(u_texels, q, 0);
    bool same = a.x >= 0.0 && a.x == b.x && a.x == c.x && a.x == d.x;
    float lead = min(min(a.y, b.y), min(c.y, d.y));
    PRECISE float margin = MARGIN * max(max(a.z, b.z), max(c.z, d.z));  // a power of 2 times B: exact
    o_class = (same && lead > margin) ? int(a.x) : -1;
}
