#include "prelude.glsl"
#include "tensor_layout.glsl"
#include "category_quad.glsl"
// Category mask at output resolution from the RAW logits: align-corners bilinear interpolation,
// vertical lerp first, a + (b - a) * t; then one class: 0 if value > 0.5 else 255 (sigmoid: if the
// logit > 3 * 2^-25, see category_quad.glsl); several classes: sigmoid when ACTIVATION == 1 (softmax
// is skipped: it keeps the argmax), then the index of the first maximum (see takes_over: ties keep
// the lowest index, a NaN never takes over), modulo 256.
//
// One fragment computes 4 horizontally adjacent output pixels and writes them packed into one
// R32UI texel (byte i = pixel 4x + i, so the texture's memory is the mask's rows). The taps are
// computed in float32 exactly as gpu_seg.sampling.align_corners_taps does (u_scale = float32(in -
// 1) / float32(out - 1), or 0 for an output of one pixel); PRECISE keeps the compiler from fusing
// the multiplication into the subtraction. When the 4 pixels span at most COLUMNS input columns
// (COLUMNS > 0, computed on the CPU from the scale: upscaling), each column's vertical lerp is
// computed once and shared: MediaPipe's per-pixel formula computes the same value for each pixel
// that uses it. Otherwise (COLUMNS == 0) every pixel fetches its own four taps. Drawn full-screen,
// or only over the blocks whose class is not certain (rectangles.vert.glsl, cell_class.frag.glsl).
out uint o_category;

void main() {
    o_category = category_quad(int(gl_FragCoord.y), int(gl_FragCoord.x));
}
