#include "prelude.glsl"
// The viewer's picture (gpu_seg/viewer/effects.py is the specification), drawn into the window
// region u_region = (x, y, width, height) in window pixels (GL convention: y up). The image's
// row 0 is the region's top row. Every texture is sampled at the pixel's centre: the texels
// themselves when the region has the image's size, bilinear when the picture is scaled.
//   u_effect 0 (blur), 1 (replace): out = B (1 - m) + F m, B = u_background
//   u_effect 2 (overlay):           out = F (1 - a) + T a, a = u_alpha m
// with F = u_frame, m = clamp(u_mask.r, 0, 1) (or 1 - u_mask.r when u_mask_is_background).

uniform sampler2D u_frame;
uniform sampler2D u_mask;
uniform sampler2D u_background;
uniform bool u_mask_is_background;
uniform int u_effect;
uniform vec4 u_region;
uniform vec3 u_tint;
uniform float u_alpha;
out vec4 o_color;

void main() {
    vec2 local = gl_FragCoord.xy - u_region.xy;
    vec2 uv = vec2(local.x, u_region.w - local.y) / u_region.zw;
    vec3 f = texture(u_frame, uv).rgb;
    float m = texture(u_mask, uv).r;
    if (u_mask_is_background) m = 1.0 - m;
    m = clamp(m, 0.0, 1.0);
    vec3 color;
    if (u_effect == 2) {
        float a = u_alpha * m;
        color = f * (1.0 - a) + u_tint * a;
    } else {
        vec3 b = texture(u_background, uv).rgb;
        color = b * (1.0 - m) + f * m;
    }
    o_color = vec4(color, 1.0);
}
