#include "softmax_stats.glsl"
#include "texel_store.glsl"
