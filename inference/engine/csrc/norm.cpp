// RMSNorm for fp32 rows, for CPUs with AVX2 and FMA (built with blocks.cpp by
// inference/engine/kernels.py): out = weight * (x / sqrt(mean(x^2) + eps)), what
// transformers' LlamaRMSNorm computes in fp32, in one pass instead of six operations.
// Each row's sum of squares runs in a fixed order that depends only on the row.

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.is_contiguous(), "x must be contiguous fp32");
  TORCH_CHECK(weight.scalar_type() == torch::kFloat32 && weight.is_contiguous() && weight.dim() == 1,
              "weight must be contiguous fp32 [hidden]");
  const int64_t hidden = weight.size(0);
  TORCH_CHECK(x.size(-1) == hidden && hidden % 8 == 0, "x's last size must be the weight's, a multiple of 8");
  const int64_t rows = x.numel() / hidden;
  auto out = torch::empty_like(x);
  const float* xs = x.data_ptr<float>();
  const float* ws = weight.data_ptr<float>();
  float* os = out.data_ptr<float>();
  const float epsilon = static_cast<float>(eps);
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xs + r * hidden;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t i = 0; i < hidden; i += 8) {
        const __m256 v = _mm256_loadu_ps(row + i);
        acc = _mm256_fmadd_ps(v, v, acc);
      }
      __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
      s = _mm_add_ps(s, _mm_movehl_ps(s, s));
      s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
      const float mean = _mm_cvtss_f32(s) / static_cast<float>(hidden);
      const __m256 inverse = _mm256_set1_ps(1.0f / std::sqrt(mean + epsilon));
      float* o = os + r * hidden;
      for (int64_t i = 0; i < hidden; i += 8) {
        const __m256 normed = _mm256_mul_ps(_mm256_loadu_ps(row + i), inverse);
        _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(ws + i), normed));
      }
    }
  });
  return out;
}
