#version {{GLSL_VERSION}} core
// Shared prelude of every gpu_seg program.
// PRECISE stops the compiler from contracting a*b+c into fma(), so the GPU rounds each
// multiplication and addition the way MediaPipe's CPU code does (GLSL >= 4.00 only).
#if __VERSION__ >= 400
#define PRECISE precise
#else
#define PRECISE
#endif
