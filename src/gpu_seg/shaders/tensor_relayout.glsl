#include "prelude.glsl"
#include "tensor_layout.glsl"
// Fills the tensor texture (TensorLayout) from a GL-side tensor, on the GPU (no host copy), for
// SegmentationPostprocessor.process_resident (fragment form tensor_relayout.frag.glsl, compute form
// tensor_relayout.comp.glsl: the same function, one value per texel of the tensor texture):
// SOURCE == 0: u_source is an R32F texture holding the tensor's float32 values in HWC order,
//   RAW_LINE values per texture row (the caller's buffer, uploaded through GL_PIXEL_UNPACK_BUFFER);
// SOURCE == 1: u_source is the caller's float texture of (W, H) texels whose components are the
//   C <= 4 channels (read with texelFetch and a NEAREST sampler object, so its own filter state
//   does not matter).
// Padding lanes and texels are written as 0.
#define SOURCE {{SOURCE}}
const int RAW_LINE = {{RAW_LINE}};

uniform sampler2D u_source;

vec4 texel_value(ivec2 t) {
    ivec3 owner = texel_owner(t);
    vec4 texel = vec4(0.0);
    if (owner.x >= 0) {
#if SOURCE == 1
        vec4 pixel = texelFetch(u_source, owner.xy, 0);
#endif
        for (int k = 0; k < LANES; ++k) {
            int channel = owner.z * LANES + k;
            if (channel < CHANNELS) {
#if SOURCE == 0
                int i = (owner.y * TENSOR_W + owner.x) * CHANNELS + channel;
                texel[k] = texelFetch(u_source, ivec2(i % RAW_LINE, i / RAW_LINE), 0).r;
#else
                texel[k] = pixel[channel];
#endif
            }
        }
    }
    return texel;
}
