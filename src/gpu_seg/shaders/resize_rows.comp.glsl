#include "prelude.glsl"
#include "tensor_layout.glsl"
#include "resize_row.glsl"
// Compute form of resize_rows.frag.glsl (same arithmetic: resize_row.glsl), every channel group in
// one dispatch of (ceil(u_width / 64), TENSOR_H, GROUPS) work groups. The rows are stored planar,
// channel by channel: channel c of output column x of tensor row y at rows[(c * TENSOR_H + y) *
// u_width + x] (padding lanes are not stored), for resize_columns.comp.glsl.
layout(local_size_x = 64) in;
layout(std430, binding = 0) writeonly buffer Rows {
    float rows[];
};
uniform int u_width;

void main() {
    int x = int(gl_GlobalInvocationID.x);
    int y = int(gl_GlobalInvocationID.y);
    int n = int(gl_GlobalInvocationID.z);
    if (x >= u_width) return;
    vec4 h = resize_row(x, y, n);
    for (int k = 0; k < LANES; ++k) {
        int channel = n * LANES + k;
        if (channel < CHANNELS) rows[(channel * TENSOR_H + y) * u_width + x] = h[k];
    }
}
