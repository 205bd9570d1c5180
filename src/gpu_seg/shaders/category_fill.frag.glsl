#include "prelude.glsl"
// Category shortcut: every output pixel gets the class of the input cell its align-corners taps
// start in (u_cells, from cell_uniform.frag.glsl), 4 pixels per fragment packed into one R32UI
// texel as in category.frag.glsl. Pixels of cells marked -1 ("unsure") are then overwritten by
// category.frag.glsl drawn over those blocks only. The taps are computed as in category.frag.glsl.
const int TENSOR_W = {{TENSOR_W}};
const int TENSOR_H = {{TENSOR_H}};

uniform isampler2D u_cells;
uniform float u_scale_x;
uniform float u_scale_y;
out uint o_category;

void main() {
    int row = int(gl_FragCoord.y);
    int column = int(gl_FragCoord.x) * 4;
    PRECISE float y = float(row) * u_scale_y;
    int cy = min(int(max(floor(y), 0.0)), TENSOR_H - 1);
    uint bits = 0u;
    for (int i = 0; i < 4; ++i) {
        PRECISE float x = float(column + i) * u_scale_x;
        int cx = min(int(max(floor(x), 0.0)), TENSOR_W - 1);
        bits |= uint(max(texelFetch(u_cells, ivec2(cx, cy), 0).r, 0) & 255) << (8 * i);
    }
    o_category = bits;
}
