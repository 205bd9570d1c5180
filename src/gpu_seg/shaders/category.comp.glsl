#include "prelude.glsl"
#include "tensor_layout.glsl"
#include "category_quad.glsl"
// Compute form of category.frag.glsl (same arithmetic: category_quad.glsl): one invocation per 4
// horizontally adjacent output pixels, packed into one uint (byte i = pixel 4 * quad + i) at
// quads_out[row * u_quads + quad]: the same bytes as the R32UI texture of the fragment pass, rows of
// u_quads = ceil(u_width / 4) uints. Dispatched as (ceil(u_quads / 64), height) work groups.
layout(local_size_x = 64) in;
layout(std430, binding = 0) writeonly buffer Category {
    uint quads_out[];
};
uniform int u_quads;

void main() {
    int quad = int(gl_GlobalInvocationID.x);
    int row = int(gl_GlobalInvocationID.y);
    if (quad >= u_quads) return;
    quads_out[row * u_quads + quad] = category_quad(row, quad);
}
