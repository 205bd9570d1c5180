// How confidence values are stored (OUTPUT_FORMAT): 0 = float32 as is; 1 = float16, the bits of
// float32 -> float16 with round-to-nearest-even done here with integer operations (the GPU's own
// conversion on writing to a half-float target need not round that way); 2 = uint8,
// floor(v * 255 + 0.5) clamped to [0, 255] (round half up, as MediaPipe's uint8 option), NaN -> 0.
#define OUTPUT_FORMAT {{OUTPUT_FORMAT}}
#if OUTPUT_FORMAT == 0
#define OUT_TYPE float
#else
#define OUT_TYPE uint
#endif

uint half_bits(float f) {
    uint x = floatBitsToUint(f);
    uint sign = (x >> 16) & 0x8000u;
    uint e = (x >> 23) & 0xffu;
    uint m = x & 0x7fffffu;
    if (e == 255u) return sign | (m != 0u ? 0x7e00u : 0x7c00u);  // NaN (quiet) or infinity
    int exponent = int(e) - 112;  // rebias 127 -> 15
    if (exponent >= 31) return sign | 0x7c00u;  // too large: infinity
    uint mantissa;
    uint shift;
    uint base;
    if (exponent <= 0) {  // a half subnormal (or zero): 24-bit significand shifted into 10 bits
        if (e == 0u) return sign;  // float32 zero or subnormal: far below the half range
        shift = uint(14 - exponent);
        if (shift > 24u) return sign;
        mantissa = m | 0x800000u;
        base = sign;
    } else {
        shift = 13u;
        mantissa = m;
        base = sign | (uint(exponent) << 10);
    }
    uint kept = mantissa >> shift;
    uint rest = mantissa & ((1u << shift) - 1u);
    uint half_way = 1u << (shift - 1u);
    if (rest > half_way || (rest == half_way && (kept & 1u) == 1u)) kept += 1u;  // carries are correct
    return base + kept;
}

OUT_TYPE encode(float v) {
#if OUTPUT_FORMAT == 0
    return v;
#elif OUTPUT_FORMAT == 1
    return half_bits(v);
#else
    if (is_nan(v)) return 0u;
    PRECISE float scaled = v * 255.0 + 0.5;
    return uint(clamp(floor(scaled), 0.0, 255.0));
#endif
}
