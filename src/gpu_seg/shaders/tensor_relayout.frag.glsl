#include "tensor_relayout.glsl"
out vec4 o_texel;

void main() {
    o_texel = texel_value(ivec2(gl_FragCoord.xy));
}
