// Matrix products with weights held in the GGUF's own blocks of 32, for CPUs with AVX2
// and FMA (inference/engine/kernels.py builds and loads this file with attention.cpp).
//
// Q4_1 (the bundled model's decoder): per group of 32 weights, 16 bytes of 4-bit codes
// (byte i holds code i in its low nibble and code i + 16 in its high one) and two fp32
// numbers d and m; the weight is fma(q, d, m), which is q * d + m rounded once. As d is
// an fp16 value and q < 16, q * d is exact in fp32, so this is bit for bit the fp32
// weight the GGUF reader produced.
// Q8_0 (the bundled vocabulary head): per group, 32 signed bytes and d; the weight is
// q * d, exact in fp32 for the same reason.
//
// out[m, n] = sum_k x[m, k] * w[n, k]. Every output is one 8-lane fp32 accumulator
// that walks k from 0 to K in steps of 8, then the lanes are summed in a fixed order.
// Nothing in that order depends on how many rows the call has or how many threads run
// it (threads split the outputs n, never a sum), so a row's result is the same whatever
// else shares the step.

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kGroup = 32;
// A tile is up to kOuts weight rows, dequantized once into a small buffer, times up to
// kRows rows of x: 12 accumulators, which with the loads fit AVX2's 16 registers.
constexpr int64_t kOuts = 3;
constexpr int kRows = 4;

inline float lane_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

inline __m256 widen_u8(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)); }
inline __m256 widen_i8(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)); }

void dequantize_q4_1(const uint8_t* codes, const float* dm, int64_t k, float* out) {
  const __m128i nibble = _mm_set1_epi8(0x0F);
  for (int64_t g = 0; g < k / kGroup; ++g) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + g * 16));
    const __m128i low = _mm_and_si128(bytes, nibble);
    const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), nibble);
    const __m256 d = _mm256_set1_ps(dm[2 * g]);
    const __m256 m = _mm256_set1_ps(dm[2 * g + 1]);
    float* o = out + g * kGroup;
    _mm256_storeu_ps(o, _mm256_fmadd_ps(widen_u8(low), d, m));
    _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(widen_u8(_mm_srli_si128(low, 8)), d, m));
    _mm256_storeu_ps(o + 16, _mm256_fmadd_ps(widen_u8(high), d, m));
    _mm256_storeu_ps(o + 24, _mm256_fmadd_ps(widen_u8(_mm_srli_si128(high, 8)), d, m));
  }
}

void dequantize_q8_0(const int8_t* codes, const float* scales, int64_t k, float* out) {
  for (int64_t g = 0; g < k / kGroup; ++g) {
    const __m128i first = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + g * kGroup));
    const __m128i second = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + g * kGroup + 16));
    const __m256 d = _mm256_set1_ps(scales[g]);
    float* o = out + g * kGroup;
    _mm256_storeu_ps(o, _mm256_mul_ps(widen_i8(first), d));
    _mm256_storeu_ps(o + 8, _mm256_mul_ps(widen_i8(_mm_srli_si128(first, 8)), d));
    _mm256_storeu_ps(o + 16, _mm256_mul_ps(widen_i8(second), d));
    _mm256_storeu_ps(o + 24, _mm256_mul_ps(widen_i8(_mm_srli_si128(second, 8)), d));
  }
}

// ROWS rows of x against OUTS dequantized weight rows w (each k long).
template <int ROWS, int OUTS>
inline void tile(const float* x, int64_t k, const float* w, float* out, int64_t out_stride) {
  __m256 acc[ROWS][OUTS];
  for (int r = 0; r < ROWS; ++r)
    for (int j = 0; j < OUTS; ++j) acc[r][j] = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 8) {
    __m256 wv[OUTS];
    for (int j = 0; j < OUTS; ++j) wv[j] = _mm256_loadu_ps(w + j * k + i);
    for (int r = 0; r < ROWS; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * k + i);
      for (int j = 0; j < OUTS; ++j) acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int j = 0; j < OUTS; ++j) out[r * out_stride + j] = lane_sum(acc[r][j]);
}

// All rows of x against OUTS weight rows; the rows left over after whole tiles of kRows
// take a smaller tile, with the same sum for every output.
template <int OUTS>
void all_rows(const float* x, int64_t rows, int64_t k, const float* w, float* out, int64_t n) {
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows) tile<kRows, OUTS>(x + r * k, k, w, out + r * n, n);
  switch (rows - r) {
    case 3: tile<3, OUTS>(x + r * k, k, w, out + r * n, n); break;
    case 2: tile<2, OUTS>(x + r * k, k, w, out + r * n, n); break;
    case 1: tile<1, OUTS>(x + r * k, k, w, out + r * n, n); break;
    default: break;
  }
}

template <typename Dequantize>
torch::Tensor blocked_mm(const torch::Tensor& x, int64_t n, int64_t k, Dequantize dequantize) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "x must be [rows, ", k, "]");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.is_contiguous(), "x must be contiguous fp32");
  TORCH_CHECK(k % kGroup == 0, "the input size must be whole groups of 32");
  const int64_t rows = x.size(0);
  auto out = torch::empty({rows, n}, x.options());
  const float* xs = x.data_ptr<float>();
  float* os = out.data_ptr<float>();
  const int64_t tiles = (n + kOuts - 1) / kOuts;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    // Reused from call to call: freeing a fresh buffer every call costs more than the
    // product on small steps (glibc returns memory from threads' arenas eagerly).
    thread_local std::vector<float> w;
    if (w.size() < static_cast<size_t>(kOuts * k)) w.resize(kOuts * k);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t first = t * kOuts;
      const int64_t outs = std::min(kOuts, n - first);
      for (int64_t j = 0; j < outs; ++j) dequantize(first + j, w.data() + j * k);
      if (outs == kOuts) {
        all_rows<kOuts>(xs, rows, k, w.data(), os + first, n);
      } else {
        for (int64_t j = 0; j < outs; ++j) all_rows<1>(xs, rows, k, w.data() + j * k, os + first + j, n);
      }
    }
  });
  return out;
}

torch::Tensor q4_1_mm(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& dm) {
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == torch::kUInt8 && codes.is_contiguous(),
              "codes must be contiguous uint8 [out, in / 2]");
  const int64_t n = codes.size(0), k = codes.size(1) * 2;
  TORCH_CHECK(dm.scalar_type() == torch::kFloat32 && dm.is_contiguous() && dm.numel() == n * (k / kGroup) * 2,
              "dm must be contiguous fp32 [out, in / 32, 2]");
  const uint8_t* cs = codes.data_ptr<uint8_t>();
  const float* ds = dm.data_ptr<float>();
  return blocked_mm(x, n, k, [&](int64_t row, float* out) {
    dequantize_q4_1(cs + row * (k / 2), ds + row * (k / kGroup) * 2, k, out);
  });
}

torch::Tensor q8_0_mm(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& scales) {
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == torch::kInt8 && codes.is_contiguous(),
              "codes must be contiguous int8 [out, in]");
  const int64_t n = codes.size(0), k = codes.size(1);
  TORCH_CHECK(scales.scalar_type() == torch::kFloat32 && scales.is_contiguous() && scales.numel() == n * (k / kGroup),
              "scales must be contiguous fp32 [out, in / 32]");
  const int8_t* cs = codes.data_ptr<int8_t>();
  const float* ds = scales.data_ptr<float>();
  return blocked_mm(x, n, k, [&](int64_t row, float* out) {
    dequantize_q8_0(cs + row * k, ds + row * (k / kGroup), k, out);
  });
}

// The fp32 [N, K] weights, for steps of many rows, where a GEMM on them is faster.
template <typename Dequantize>
torch::Tensor unpack(int64_t n, int64_t k, Dequantize dequantize) {
  auto out = torch::empty({n, k}, torch::kFloat32);
  float* os = out.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) dequantize(row, os + row * k);
  });
  return out;
}

torch::Tensor q4_1_unpack(const torch::Tensor& codes, const torch::Tensor& dm) {
  const int64_t n = codes.size(0), k = codes.size(1) * 2;
  TORCH_CHECK(codes.scalar_type() == torch::kUInt8 && codes.is_contiguous() && dm.is_contiguous() &&
                  dm.numel() == n * (k / kGroup) * 2,
              "codes [out, in / 2] uint8 and dm [out, in / 32, 2] fp32, contiguous");
  const uint8_t* cs = codes.data_ptr<uint8_t>();
  const float* ds = dm.data_ptr<float>();
  return unpack(n, k, [&](int64_t row, float* out) {
    dequantize_q4_1(cs + row * (k / 2), ds + row * (k / kGroup) * 2, k, out);
  });
}

torch::Tensor q8_0_unpack(const torch::Tensor& codes, const torch::Tensor& scales) {
  const int64_t n = codes.size(0), k = codes.size(1);
  TORCH_CHECK(codes.scalar_type() == torch::kInt8 && codes.is_contiguous() && scales.is_contiguous() &&
                  scales.numel() == n * (k / kGroup),
              "codes [out, in] int8 and scales [out, in / 32] fp32, contiguous");
  const int8_t* cs = codes.data_ptr<int8_t>();
  const float* ds = scales.data_ptr<float>();
  return unpack(n, k, [&](int64_t row, float* out) {
    dequantize_q8_0(cs + row * k, ds + row * (k / kGroup), k, out);
  });
}

}  // namespace

torch::Tensor decode_attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                               const torch::Tensor& lengths, double scale);  // attention.cpp
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);  // norm.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("q4_1_mm", &q4_1_mm, "x [M, K] times Q4_1 weights [N, K], transposed: [M, N]");
  module.def("q8_0_mm", &q8_0_mm, "x [M, K] times Q8_0 weights [N, K], transposed: [M, N]");
  module.def("q4_1_unpack", &q4_1_unpack, "Q4_1 weights as fp32 [N, K]");
  module.def("q8_0_unpack", &q8_0_unpack, "Q8_0 weights as fp32 [N, K]");
  module.def("decode_attention", &decode_attention, "one query per head and row over each row's own keys");
  module.def("rms_norm", &rms_norm, "weight * x / sqrt(mean(x^2) + eps), row by row");
}
