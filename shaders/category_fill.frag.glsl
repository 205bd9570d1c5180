#include "prelude.glsl"
// Category shortcut: every output pixel gets the class of the input cell its align-corners taps
// start in (u_cells, from cell_uniform.frag.glsl). Pixels of cells marked -1 ("unsure") are then
// overwritten by category.frag.glsl drawn over those cells only. The taps are computed as in
// category.frag.glsl.
const int TENSOR_W = {{TENSOR_W}};
const int TENSOR_H = {{TENSOR_H}};

uniform isampler2D u_cells;
uniform float u_scale_x;
uniform float u_scale_y;
out uint o_category;

void main() {
    PRECISE vec2 pos = vec2(ivec2(gl_FragCoord.xy)) * vec2(u_scale_x, u_scale_y);
    ivec2 cell = min(ivec2(max(floor(pos), 0.0)), ivec2(TENSOR_W - 1, TENSOR_H - 1));
    o_category = uint(max(texelFetch(u_cells, cell, 0).r, 0));
}
