#include "prelude.glsl"
#include "tensor_layout.glsl"
// Confidence masks, step 1 of 2 (OpenCV INTER_LINEAR is separable and interpolates rows first):
// every tensor row resampled horizontally to the output width. u_taps = (x0, x1, w0, w1) per output
// column (gpu_seg.sampling.resize_taps, OpenCV's float64 mapping), x1 < 0 meaning one tap (S[x0]).
// Target: one chunk of groups starting at u_chunk_first; group u_chunk_first + n of tensor row y
// goes to row n * TENSOR_H + y.

uniform sampler2D u_source;
uniform sampler2D u_taps;
uniform int u_chunk_first;
out vec4 o_value;

void main() {
    vec4 v_taps = texelFetch(u_taps, ivec2(gl_FragCoord.x, 0), 0);
    int y = int(gl_FragCoord.y) % TENSOR_H;
    int n = u_chunk_first + int(gl_FragCoord.y) / TENSOR_H;
    vec4 s0 = texelFetch(u_source, tensor_base(int(v_taps.x), y) + ivec2(n, 0), 0);
    if (v_taps.y < 0.0) {
        o_value = s0;
        return;
    }
    vec4 s1 = texelFetch(u_source, tensor_base(int(v_taps.y), y) + ivec2(n, 0), 0);
    PRECISE vec4 h = s0 * v_taps.z + s1 * v_taps.w;
    o_value = h;
}
