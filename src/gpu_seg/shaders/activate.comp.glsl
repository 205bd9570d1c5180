#include "activate.glsl"
#include "texel_store.glsl"
