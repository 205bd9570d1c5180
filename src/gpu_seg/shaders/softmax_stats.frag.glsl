#include "softmax_stats.glsl"
out vec2 o_stats;

void main() {
    o_stats = texel_value(ivec2(gl_FragCoord.xy)).xy;
}
