#include "prelude.glsl"
// One direction of the viewer's separable background blur (gpu_seg/viewer/effects.py is the
// specification): out(p) = sum over k = 0 .. 2 RADIUS of u_weights[k] * source(p + (k - RADIUS) *
// u_step), the neighbour clamped to the image (edge pixels repeat), summed in tap order. Drawn at
// the image's size into a float target: target row r holds image row r (row 0 = top).
#define RADIUS {{RADIUS}}

uniform sampler2D u_source;
uniform ivec2 u_step;  // (1, 0): along rows; (0, 1): along columns
uniform float u_weights[2 * RADIUS + 1];
out vec4 o_color;

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    ivec2 last = textureSize(u_source, 0) - 1;
    PRECISE vec3 sum = vec3(0.0);
    for (int k = 0; k <= 2 * RADIUS; ++k) {
        ivec2 q = clamp(p + (k - RADIUS) * u_step, ivec2(0), last);
        sum += u_weights[k] * texelFetch(u_source, q, 0).rgb;
    }
    o_color = vec4(sum, 1.0);
}
