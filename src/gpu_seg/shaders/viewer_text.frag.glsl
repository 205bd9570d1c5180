#include "prelude.glsl"
// The viewer's stats bar: a line of text in the bitmap font of gpu_seg/viewer/font.py, drawn into
// the window region u_region = (x, y, width, height) (GL convention: y up; the text's row 0 is
// the region's top row). Slot s of u_text holds the glyph index of character s; glyph g fills
// columns [g * CELL_WIDTH, (g + 1) * CELL_WIDTH) of u_font; each font pixel is u_scale x u_scale.
#define CELL_WIDTH {{CELL_WIDTH}}

uniform usampler2D u_text;
uniform sampler2D u_font;
uniform ivec4 u_region;
uniform int u_scale;
uniform vec3 u_ink;
uniform vec3 u_paper;
out vec4 o_color;

void main() {
    ivec2 local = ivec2(gl_FragCoord.xy) - u_region.xy;
    int row = (u_region.w - 1 - local.y) / u_scale;
    int slot = local.x / (CELL_WIDTH * u_scale);
    float ink = 0.0;
    if (slot < textureSize(u_text, 0).x && row < textureSize(u_font, 0).y) {
        int glyph = int(texelFetch(u_text, ivec2(slot, 0), 0).r);
        int column = glyph * CELL_WIDTH + (local.x % (CELL_WIDTH * u_scale)) / u_scale;
        ink = texelFetch(u_font, ivec2(column, row), 0).r;
    }
    o_color = vec4(mix(u_paper, u_ink, ink), 1.0);
}
