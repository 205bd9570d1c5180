#include "prelude.glsl"
// The packed category mask (category.frag.glsl: 4 pixels per R32UI texel, byte i = pixel 4x + i)
// as one R8UI texel per pixel, for GPU-resident results that an application samples or draws
// (usampler2D + texelFetch: the class index, or 0 / 255 for one-class models).
uniform usampler2D u_packed;
out uint o_category;

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    uint quad = texelFetch(u_packed, ivec2(p.x >> 2, p.y), 0).r;
    o_category = (quad >> uint((p.x & 3) * 8)) & 0xffu;
}
