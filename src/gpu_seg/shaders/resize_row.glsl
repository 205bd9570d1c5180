// One tensor row resampled horizontally (OpenCV INTER_LINEAR), shared by resize_rows.frag.glsl and
// resize_rows.comp.glsl. u_taps = (x0, x1, w0, w1) per output column (gpu_seg.sampling.resize_taps,
// OpenCV's float64 mapping), x1 < 0 meaning one tap (S[x0]). Needs prelude.glsl and
// tensor_layout.glsl first.
uniform sampler2D u_source;
uniform sampler2D u_taps;

// Channel group n of output column x of tensor row y.
vec4 resize_row(int x, int y, int n) {
    vec4 v_taps = texelFetch(u_taps, ivec2(x, 0), 0);
    vec4 s0 = texelFetch(u_source, tensor_base(int(v_taps.x), y) + ivec2(n, 0), 0);
    if (v_taps.y < 0.0) {
        return s0;
    }
    vec4 s1 = texelFetch(u_source, tensor_base(int(v_taps.y), y) + ivec2(n, 0), 0);
    PRECISE vec4 h = s0 * v_taps.z + s1 * v_taps.w;
    return h;
}
