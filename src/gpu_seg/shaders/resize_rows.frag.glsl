#include "prelude.glsl"
#include "tensor_layout.glsl"
#include "resize_row.glsl"
// Confidence masks, step 1 of 2 (OpenCV INTER_LINEAR is separable and interpolates rows first):
// every tensor row resampled horizontally to the output width (resize_row.glsl).
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

out vec4 o_value;

void main() {
    int y = int(gl_FragCoord.y) % TENSOR_H;
    int n = CHUNK_FIRST + int(gl_FragCoord.y) / TENSOR_H;
    o_value = resize_row(int(gl_FragCoord.x), y, n);
}
