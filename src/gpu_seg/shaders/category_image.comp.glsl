#include "prelude.glsl"
// GPU-resident frames of the compute passes: the packed category rows of category.comp.glsl (rows of
// u_quads uints, byte i of uint q = pixel 4q + i) as one R8UI texel per pixel, the texture lent to
// the caller (as category_unpack.frag.glsl does for the fragment pass's R32UI texture). Dispatched
// as (ceil(u_width / 64), ceil(u_height / 4)) work groups.
layout(local_size_x = 64, local_size_y = 4) in;
layout(std430, binding = 0) readonly buffer Category {
    uint quads_in[];
};
layout(r8ui, binding = 0) writeonly uniform uimage2D u_image;
uniform int u_width;
uniform int u_height;
uniform int u_quads;

void main() {
    ivec2 p = ivec2(gl_GlobalInvocationID.xy);
    if (p.x >= u_width || p.y >= u_height) return;
    uint quad = quads_in[p.y * u_quads + (p.x >> 2)];
    imageStore(u_image, p, uvec4((quad >> uint((p.x & 3) * 8)) & 0xffu, 0u, 0u, 0u));
}
