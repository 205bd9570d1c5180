#include "prelude.glsl"
// Triangles given in output pixel coordinates (two per rectangle, written by the CPU into a
// pooled vertex buffer): used to run a fragment shader over a few rectangles of the target only.

in vec2 a_pixel;
uniform vec2 u_target_size;

void main() {
    gl_Position = vec4(a_pixel / u_target_size * 2.0 - 1.0, 0.0, 1.0);
}
