#include "prelude.glsl"
// Category shortcut, step 2 of 2 (one fragment per input cell (x, y), the cell whose corners are
// texels (x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1), clamped to the tensor): the class shared
// by all four corners (see cell_class.frag.glsl), or -1.
const int TENSOR_W = {{TENSOR_W}};
const int TENSOR_H = {{TENSOR_H}};

uniform isampler2D u_classes;
out int o_class;

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    ivec2 q = min(p + 1, ivec2(TENSOR_W - 1, TENSOR_H - 1));
    int a = texelFetch(u_classes, p, 0).r;
    int b = texelFetch(u_classes, ivec2(q.x, p.y), 0).r;
    int c = texelFetch(u_classes, ivec2(p.x, q.y), 0).r;
    int d = texelFetch(u_classes, q, 0).r;
    o_class = (a == b && a == c && a == d) ? a : -1;
}
