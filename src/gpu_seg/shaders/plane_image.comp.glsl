#include "prelude.glsl"
// GPU-resident frames of the compute passes: one float32 plane of resize_columns.comp.glsl (the
// bound range of the planes buffer: u_height rows of u_width floats) copied into the R32F texture
// lent to the caller. The texture is bound as an r32ui image, so the copy moves bits (NaN payloads
// included) and never converts. Dispatched as (ceil(u_width / 64), ceil(u_height / 4)) work groups.
layout(local_size_x = 64, local_size_y = 4) in;
layout(std430, binding = 0) readonly buffer Plane {
    uint plane[];
};
layout(r32ui, binding = 0) writeonly uniform uimage2D u_image;
uniform int u_width;
uniform int u_height;

void main() {
    ivec2 p = ivec2(gl_GlobalInvocationID.xy);
    if (p.x >= u_width || p.y >= u_height) return;
    imageStore(u_image, p, uvec4(plane[p.y * u_width + p.x], 0u, 0u, 0u));
}
