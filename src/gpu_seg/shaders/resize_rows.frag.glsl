#include "prelude.glsl"
#include "tensor_layout.glsl"
// Confidence masks, step 1 of 2 (OpenCV INTER_LINEAR is separable and interpolates rows first):
// every tensor row resampled horizontally to the output width. u_taps = (x0, x1, w0, w1) per output
// column (gpu_seg.sampling.resize_taps, OpenCV's float64 mapping), x1 < 0 meaning one tap (S[x0]).
// Target: one chunk of groups starting at CHUNK_FIRST; group CHUNK_FIRST + n of tensor row y goes
// to row n * TENSOR_H + y. CHUNK_FIRST is a constant, or the uniform u_chunk_first when the
// template gets -1 (many chunks: one program instead of one per chunk).
#define CHUNK_FIRST_CONSTANT {{CHUNK_FIRST}}
#if CHUNK_FIRST_CONSTANT < 0
uniform int u_chunk_first;
#define CHUNK_FIRST u_chunk_first
#else
#define CHUNK_FIRST CHUNK_FIRST_CONSTANT
#endif

uniform sampler2D u_source;
uniform sampler2D u_taps;
out vec4 o_value;

void main() {
    vec4 v_taps = texelFetch(u_taps, ivec2(gl_FragCoord.x, 0), 0);
    int y = int(gl_FragCoord.y) % TENSOR_H;
    int n = CHUNK_FIRST + int(gl_FragCoord.y) / TENSOR_H;
    vec4 s0 = texelFetch(u_source, tensor_base(int(v_taps.x), y) + ivec2(n, 0), 0);
    if (v_taps.y < 0.0) {
        o_value = s0;
        return;
    }
    vec4 s1 = texelFetch(u_source, tensor_base(int(v_taps.y), y) + ivec2(n, 0), 0);
    PRECISE vec4 h = s0 * v_taps.z + s1 * v_taps.w;
    o_value = h;
}
