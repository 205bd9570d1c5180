// Tensor layout (gpu_seg.gl.pipeline.TensorLayout). The H x W x C tensor is uploaded as-is,
// channel-interleaved: LANES channels per texel (1, 2 or 4), GROUPS texels per pixel, pixels in
// row-major order. Unwrapped, pixel (x, y) starts at texel (x * GROUPS, y). When a tensor row is
// wider than the texture limit, the texels are wrapped onto lines of LINE texels instead.
const int TENSOR_W = {{TENSOR_W}};
const int TENSOR_H = {{TENSOR_H}};
const int CHANNELS = {{CHANNELS}};
const int LANES = {{LANES}};
const int GROUPS = {{GROUPS}};
const int LINE = {{LINE}};
#define TENSOR_WRAPPED {{WRAPPED}}

// First texel of pixel (x, y); its channel group n is at tensor_base(x, y) + ivec2(n, 0).
ivec2 tensor_base(int x, int y) {
#if TENSOR_WRAPPED
    int i = (y * TENSOR_W + x) * GROUPS;
    return ivec2(i % LINE, i / LINE);
#else
    return ivec2(x * GROUPS, y);
#endif
}

// Pixel (x, y) and group n stored at texel t; x = -1 for padding texels past the tensor's end.
ivec3 texel_owner(ivec2 t) {
#if TENSOR_WRAPPED
    int i = t.y * LINE + t.x;
    int pixel = i / GROUPS;
    if (pixel >= TENSOR_W * TENSOR_H) return ivec3(-1, 0, 0);
    return ivec3(pixel % TENSOR_W, pixel / TENSOR_W, i % GROUPS);
#else
    return ivec3(t.x / GROUPS, t.y, t.x % GROUPS);
#endif
}

// Whether lane k of group n holds a real channel (the last group may be padded with zeros).
bool is_channel(int n, int k) {
    return n * LANES + k < CHANNELS;
}
