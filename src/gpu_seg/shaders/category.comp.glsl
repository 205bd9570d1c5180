#include "prelude.glsl"
#include "tensor_layout.glsl"
#include "category_quad.glsl"
// Compute form of category.frag.glsl (same arithmetic: category_quad.glsl): one invocation per 4
// horizontally adjacent output pixels, packed into one uint (byte i = pixel 4 * quad + i) at
// quads_out[row * u_quads + quad]: the same bytes as the R32UI texture of the fragment pass, rows of
// u_quads = ceil(u_width / 4) uints. Dispatched as (ceil(u_quads / 64), height) work groups.
// IMAGE (GPU-resident frames): the 4 pixels go to the R8UI texture lent to the caller instead, one
// texel each (the pixels past u_width of the last quad are not stored).
#define IMAGE {{IMAGE}}
layout(local_size_x = 64) in;
#if IMAGE
layout(r8ui, binding = 0) writeonly uniform uimage2D u_image;
#else
layout(std430, binding = 0) writeonly buffer Category {
    uint quads_out[];
};
#endif
uniform int u_quads;

void main() {
    int quad = int(gl_GlobalInvocationID.x);
    int row = int(gl_GlobalInvocationID.y);
    if (quad >= u_quads) return;
#if IMAGE
    uint quad_bytes = category_quad(row, quad);
    for (int i = 0; i < 4 && 4 * quad + i < u_width; ++i) {
        imageStore(u_image, ivec2(4 * quad + i, row), uvec4((quad_bytes >> uint(8 * i)) & 0xffu, 0u, 0u, 0u));
    }
#else
    quads_out[row * u_quads + quad] = category_quad(row, quad);
#endif
}
