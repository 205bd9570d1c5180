#include "tensor_relayout.glsl"
#include "texel_store.glsl"
