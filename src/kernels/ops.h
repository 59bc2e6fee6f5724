// Element-wise and row-wise operators of the transformer: norms, RoPE, softmax, activations.
//
// Each has a plain scalar reference in namespace ref (what tests compare against) and a fast
// version (AVX2, the project's baseline) with the same signature; the public functions take the
// one of the ISA quant/dot.h's best_isa() chose (LEANLM_ISA=scalar runs the references).
#pragma once
#include <cstdint>

namespace leanlm {

enum class RopeStyle { Normal, NeoX };  // pairs (2i, 2i+1) vs pairs (i, i + d/2)

namespace ref {
void rms_norm(const float* x, const float* w, float* y, int n, float eps);
void rope(float* x, int head_dim, int n_rot, int pos, float base, float freq_scale, const float* freq_factors,
          RopeStyle style);
void softmax(float* x, int n);  // in place
// x[i] = exp(x[i] - m) (-inf gives 0); returns the sum: a softmax computed in chunks (the KV kernels'
// reference, kv/kv_kernels.h).
float exp_shift_sum(float* x, int n, float m);
void gelu_tanh(const float* x, float* y, int n);
void silu(const float* x, float* y, int n);
}  // namespace ref

// y = x / rms(x) * w   (w may be nullptr: no weight)
void rms_norm(const float* x, const float* w, float* y, int n, float eps);
// Rotates the first n_rot dims of one head vector x[head_dim] for position pos.
// freq_factors (may be nullptr) divides each pair's frequency (Llama 3 long-context factors).
void rope(float* x, int head_dim, int n_rot, int pos, float base, float freq_scale, const float* freq_factors,
          RopeStyle style);
// The same in two steps, so that all heads of a token share one table of angles:
// cs[2i] = cos(theta_i), cs[2i+1] = sin(theta_i) for the n_rot/2 pairs, angles in double precision.
// (llama.cpp's float recurrence theta_i = theta_{i-1} * base^(-2/n_rot) was tried: it moved the
// agreement with llama.cpp only within its noise, so the exact angles stay.)
void rope_angles(int pos, int n_rot, float base, float freq_scale, const float* freq_factors, float* cs);
void rope_apply(float* x, int n_rot, RopeStyle style, const float* cs);
void softmax(float* x, int n);
void gelu_tanh(const float* x, float* y, int n);
void silu(const float* x, float* y, int n);
// y[i] = act(gate[i]) * up[i]
void geglu(const float* gate, const float* up, float* y, int n);
void swiglu(const float* gate, const float* up, float* y, int n);
// y += a * x ; y *= a
void axpy(float a, const float* x, float* y, int n);
void scale(float* x, float a, int n);
float dot_f32(const float* a, const float* b, int n);

}  // namespace leanlm
