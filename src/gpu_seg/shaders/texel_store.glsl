// The compute form of a one-value-per-texel pass (activate, softmax_stats, tensor_relayout): the
// pass's texel_value(t), the same function its fragment form writes, stored into the target
// texture bound as an image of IMAGE_FORMAT (r32f, rg32f or rgba32f: the target's own format, so
// values are stored as they are). Dispatched as (ceil(w / 16), ceil(h / 8)) work groups over the
// target's (w, h) texels (u_size).
layout(local_size_x = 16, local_size_y = 8) in;
layout({{IMAGE_FORMAT}}, binding = 0) writeonly uniform image2D u_target;
uniform ivec2 u_size;

void main() {
    ivec2 t = ivec2(gl_GlobalInvocationID.xy);
    if (t.x >= u_size.x || t.y >= u_size.y) return;
    imageStore(u_target, t, texel_value(t));
}
