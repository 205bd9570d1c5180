#include "prelude.glsl"
#include "encode.glsl"
// Compute form of resize_columns.frag.glsl (same arithmetic): the planar rows of
// resize_rows.comp.glsl blended vertically, h(y0) * w0 + h(y1) * w1, every mask of the frame in one
// dispatch of (ceil(u_width / 128), u_height, masks) work groups (or a few, see below).
// IMAGES == 0: float32 masks (OUTPUT_FORMAT 0) into a storage buffer: mask u_first_mask + z goes to
// planes[z * u_plane_stride + y * u_width + x] of the bound range: planes back to back, (masks,
// height, width) with a plane stride of whole 256-byte blocks (several dispatches when the planes
// do not fit one storage block binding).
// IMAGES > 0: mask u_first_mask + z goes to image z, up to IMAGES masks per dispatch, stored as
// OUTPUT_FORMAT says (encode.glsl): float32 into an R32F texture bound as an r32ui image (the bits
// move, never converted), float16 bits into R16UI, uint8 into R8UI: the textures the fragment
// passes would write (or the resident frame's lent textures).
// ALL_CHANNELS: mask k is channel k; otherwise channel_of[k].
// u_taps = (y0, y1, w0, w1) per output row; y1 < 0 means one tap.
const int TENSOR_H = {{TENSOR_H}};
#define ALL_CHANNELS {{ALL_CHANNELS}}
#define IMAGES {{IMAGES}}
#if OUTPUT_FORMAT == 0
#define MASK_IMAGE_FORMAT r32ui
#elif OUTPUT_FORMAT == 1
#define MASK_IMAGE_FORMAT r16ui
#else
#define MASK_IMAGE_FORMAT r8ui
#endif

layout(local_size_x = 128) in;
layout(std430, binding = 0) readonly buffer Rows {
    float rows[];
};
#if IMAGES
layout(MASK_IMAGE_FORMAT, binding = 0) writeonly uniform uimage2D u_images[IMAGES];
#else
layout(std430, binding = 1) writeonly buffer Planes {
    float planes[];
};
#endif
#if !ALL_CHANNELS
layout(std430, binding = 2) readonly buffer Channels {
    int channel_of[];
};
#endif
uniform sampler2D u_taps;
uniform int u_width;
uniform int u_plane_stride;
uniform int u_first_mask;

void main() {
    int x = int(gl_GlobalInvocationID.x);
    int y = int(gl_GlobalInvocationID.y);
    int z = int(gl_WorkGroupID.z);  // local size 1 in z: uniform over the work group
    if (x >= u_width) return;
    vec4 v_taps = texelFetch(u_taps, ivec2(y, 0), 0);
    int y0 = int(v_taps.x);
    int y1 = int(v_taps.y);
#if ALL_CHANNELS
    int channel = u_first_mask + z;
#else
    int channel = channel_of[u_first_mask + z];
#endif
    int row = channel * TENSOR_H;
    float r = rows[(row + y0) * u_width + x];
    if (y1 >= 0) {
        float h1 = rows[(row + y1) * u_width + x];
        PRECISE float s = r * v_taps.z + h1 * v_taps.w;
        r = s;
    }
#if IMAGES && OUTPUT_FORMAT == 0
    imageStore(u_images[z], ivec2(x, y), uvec4(floatBitsToUint(r), 0u, 0u, 0u));
#elif IMAGES
    imageStore(u_images[z], ivec2(x, y), uvec4(encode(r), 0u, 0u, 0u));
#else
    planes[z * u_plane_stride + y * u_width + x] = r;
#endif
}
