#include "prelude.glsl"
// One triangle that covers the whole viewport, generated from gl_VertexID: no vertex buffers.
// Every gpu_seg pass is a fragment shader that addresses texels with gl_FragCoord, so output
// row r of a target is row r of the mask in memory (row 0 = top of the image, as in numpy).

void main() {
    vec2 corner = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
