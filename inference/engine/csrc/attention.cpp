// Decode attention for rows of different lengths, for CPUs with AVX2 and FMA
// (inference/engine/kernels.py builds and loads this file with blocks.cpp).
//
// Each row has one new query per head and reads its own keys and values straight from
// the KV cache's buffers, only as many as the row holds. One task is one row and one
// key/value head with the query heads that share it (grouped-query attention), so the
// keys and values are read once for the group. Every sum (a score's dot product, the
// softmax's denominator, the weighted values) runs in a fixed order that depends only
// on the row itself: a row's result is the same bits whatever shares the step and
// however many threads run it.

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

inline float lane_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// e^x for 8 lanes, to about one unit in the last place for the arguments softmax gives
// it (x <= 0): x = n ln 2 + r with |r| <= ln 2 / 2, e^r from its Taylor polynomial to
// degree 7 (Horner, so the error is below fp32's rounding), times 2^n built in the
// exponent bits. Below -87.3 the result is 0, as fp32's e^x underflows there anyway.
inline __m256 exp8(__m256 x) {
  const __m256 low = _mm256_set1_ps(-87.3f);
  const __m256 under = _mm256_cmp_ps(x, low, _CMP_LT_OQ);
  x = _mm256_max_ps(x, low);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n ln 2, with ln 2 split in two so that n * high is exact.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
  return _mm256_andnot_ps(under, result);
}

}  // namespace

// query [rows, heads, dim] contiguous; key and value [rows, kv_heads, >= length, dim]
// with unit stride in dim; lengths [rows] int64. Returns [rows, heads, dim].
torch::Tensor decode_attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                               const torch::Tensor& lengths, double scale) {
  TORCH_CHECK(query.dim() == 3 && query.is_contiguous() && query.scalar_type() == torch::kFloat32,
              "query must be contiguous fp32 [rows, heads, dim]");
  TORCH_CHECK(key.dim() == 4 && value.dim() == 4 && key.sizes() == value.sizes(), "key and value must match");
  TORCH_CHECK(key.scalar_type() == torch::kFloat32 && value.scalar_type() == torch::kFloat32, "fp32 key and value");
  TORCH_CHECK(key.stride(3) == 1 && value.stride(3) == 1, "key and value need unit stride along dim");
  TORCH_CHECK(lengths.dim() == 1 && lengths.scalar_type() == torch::kInt64 && lengths.is_contiguous(),
              "lengths must be contiguous int64 [rows]");
  const int64_t rows = query.size(0), heads = query.size(1), dim = query.size(2);
  const int64_t kv_heads = key.size(1), capacity = key.size(2);
  TORCH_CHECK(key.size(0) == rows && key.size(3) == dim && lengths.size(0) == rows, "shapes do not match");
  TORCH_CHECK(heads % kv_heads == 0 && dim % 8 == 0 && dim <= 256, "heads must group evenly, dim be 8k <= 256");
  const int64_t group = heads / kv_heads;
  const int64_t* length_of = lengths.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    TORCH_CHECK(length_of[r] >= 1 && length_of[r] <= capacity, "row ", r, " has ", length_of[r], " keys");
  auto out = torch::empty({rows, heads, dim}, query.options());
  const float* qs = query.data_ptr<float>();
  const float* ks = key.data_ptr<float>();
  const float* vs = value.data_ptr<float>();
  float* os = out.data_ptr<float>();
  const int64_t k_row = key.stride(0), k_head = key.stride(1), k_pos = key.stride(2);
  const int64_t v_row = value.stride(0), v_head = value.stride(1), v_pos = value.stride(2);
  const float fscale = static_cast<float>(scale);
  const int64_t lanes = dim / 8;

  at::parallel_for(0, rows * kv_heads, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / kv_heads, h = task % kv_heads;
      const int64_t length = length_of[r];
      const int64_t padded = (length + 7) / 8 * 8;
      if (scores.size() < static_cast<size_t>(group * padded)) scores.resize(group * padded);
      const float* keys = ks + r * k_row + h * k_head;
      const float* values = vs + r * v_row + h * v_head;
      for (int64_t g = 0; g < group; ++g) {
        const float* q = qs + (r * heads + h * group + g) * dim;
        float* s = scores.data() + g * padded;
        float top = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < length; ++t) {
          const float* k = keys + t * k_pos;
          __m256 acc = _mm256_setzero_ps();
          for (int64_t i = 0; i < lanes; ++i) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i), _mm256_loadu_ps(k + 8 * i), acc);
          s[t] = lane_sum(acc) * fscale;
          top = std::max(top, s[t]);
        }
        for (int64_t t = length; t < padded; ++t) s[t] = -std::numeric_limits<float>::infinity();
        const __m256 shift = _mm256_set1_ps(top);
        __m256 total = _mm256_setzero_ps();
        for (int64_t t = 0; t < padded; t += 8) {
          const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + t), shift));
          _mm256_storeu_ps(s + t, p);
          total = _mm256_add_ps(total, p);
        }
        const float inverse = 1.0f / lane_sum(total);
        __m256 acc[32];
        for (int64_t i = 0; i < lanes; ++i) acc[i] = _mm256_setzero_ps();
        for (int64_t t = 0; t < length; ++t) {
          const __m256 p = _mm256_set1_ps(s[t]);
          const float* v = values + t * v_pos;
          for (int64_t i = 0; i < lanes; ++i) acc[i] = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8 * i), acc[i]);
        }
        float* o = os + (r * heads + h * group + g) * dim;
        const __m256 norm = _mm256_set1_ps(inverse);
        for (int64_t i = 0; i < lanes; ++i) _mm256_storeu_ps(o + 8 * i, _mm256_mul_ps(acc[i], norm));
      }
    }
  });
  return out;
}
