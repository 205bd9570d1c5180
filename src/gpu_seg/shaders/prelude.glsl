#version {{GLSL_VERSION}} core
// Shared prelude of every gpu_seg program.
// PRECISE stops the compiler from contracting a*b+c into fma(), so the GPU rounds each
// multiplication and addition the way MediaPipe's CPU code does (GLSL >= 4.00 only).
#if __VERSION__ >= 400
#define PRECISE precise
#else
#define PRECISE
#endif

// NaN test on the bits, so that no fast-math folding of comparisons can change it.
bool is_nan(float x) {
    return (floatBitsToUint(x) & 0x7fffffffu) > 0x7f800000u;
}

// std::max_element's step: does v take over from the current best? Never for a NaN v, and
// never while best is NaN (a NaN in channel 0 keeps channel 0).
bool takes_over(float best, float v) {
    return !is_nan(v) && !is_nan(best) && best < v;
}
