#include "activate.glsl"
out vec4 o_value;

void main() {
    o_value = texel_value(ivec2(gl_FragCoord.xy));
}
