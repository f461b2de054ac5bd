// The half-precision types of cuda_fp16.h that kernels/paged_attention.cu uses, on GCC's
// _Float16 (conversions round to nearest even, as the GPU's).
#pragma once
struct __half { _Float16 v; };
struct __half2 { __half x, y; };
struct float2 { float x, y; };
inline __half __float2half_rn(float f) { return __half{(_Float16)f}; }
inline float2 __half22float2(__half2 h) { return float2{(float)h.x.v, (float)h.y.v}; }
