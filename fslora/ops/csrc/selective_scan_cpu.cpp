// Selective scan (Mamba's S6 recurrence) on CPU, forward only: fslora.ops.scan_cpu builds this file with
// torch.utils.cpp_extension on first use. Written for inference, where the pure-torch "chunked" scan
// is memory-bound: it makes ~15 passes over b*d*L floats, this kernel reads each input once.
//
// Per row (batch, channel) and state k, with dt = softplus(delta + bias) (softplus and bias optional):
//     h_t = exp(dt_t * A[ch, k]) * h_{t-1} + dt_t * u_t * B[b, g, k, t],   y_t += h_t * C[b, g, k, t]
// plus y_t += D[ch] * u_t; g = ch / (d / G) is the channel's B/C group. The elementwise parts are
// written as `omp simd` loops over t that the compiler vectorises (expf/log1pf from glibc's libmvec,
// which needs -ffast-math); only the recurrence itself runs step by step. Rows are split over torch's intra-op threads.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

void check(const torch::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu(), "selective_scan_cpu: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, "selective_scan_cpu: ", name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), "selective_scan_cpu: ", name, " must be contiguous");
  TORCH_CHECK(dims < 0 || t.dim() == dims, "selective_scan_cpu: ", name, " must have ", dims, " dims");
}

}  // namespace

// u, delta (b, d, L); A (d, n); B, C (b, G, n, L); D, delta_bias (d) or empty. Returns y (b, d, L).
torch::Tensor selective_scan_forward(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
                                     const torch::Tensor& B, const torch::Tensor& C, const torch::Tensor& D,
                                     const torch::Tensor& delta_bias, bool softplus) {
  check(u, "u", 3);
  check(delta, "delta", 3);
  check(A, "A", 2);
  check(B, "B", 4);
  check(C, "C", 4);
  check(D, "D", -1);
  check(delta_bias, "delta_bias", -1);
  const int64_t batch = u.size(0), dim = u.size(1), length = u.size(2);
  const int64_t groups = B.size(1), n_state = A.size(1);
  TORCH_CHECK(delta.sizes() == u.sizes(), "selective_scan_cpu: delta must match u");
  TORCH_CHECK(A.size(0) == dim && groups > 0 && dim % groups == 0, "selective_scan_cpu: bad A or groups");
  TORCH_CHECK(B.sizes() == C.sizes() && B.size(0) == batch && B.size(2) == n_state && B.size(3) == length,
              "selective_scan_cpu: B and C must be (batch, groups, d_state, seqlen)");
  TORCH_CHECK(D.numel() == 0 || D.numel() == dim, "selective_scan_cpu: D must have dim entries");
  TORCH_CHECK(delta_bias.numel() == 0 || delta_bias.numel() == dim,
              "selective_scan_cpu: delta_bias must have dim entries");

  auto y = torch::empty_like(u);
  const int64_t per_group = dim / groups;
  const float* u_ptr = u.data_ptr<float>();
  const float* delta_ptr = delta.data_ptr<float>();
  const float* A_ptr = A.data_ptr<float>();
  const float* B_ptr = B.data_ptr<float>();
  const float* C_ptr = C.data_ptr<float>();
  const float* D_ptr = D.numel() ? D.data_ptr<float>() : nullptr;
  const float* bias_ptr = delta_bias.numel() ? delta_bias.data_ptr<float>() : nullptr;
  float* y_ptr = y.data_ptr<float>();

  at::parallel_for(0, batch * dim, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> dt_buf(length), decay_buf(length), state_buf(length);
    float* dt = dt_buf.data();
    float* decay = decay_buf.data();
    float* state = state_buf.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, ch = row % dim, g = ch / per_group;
      const float* u_row = u_ptr + row * length;
      const float* delta_row = delta_ptr + row * length;
      float* y_row = y_ptr + row * length;
      const float bias = bias_ptr ? bias_ptr[ch] : 0.f;
      const float skip = D_ptr ? D_ptr[ch] : 0.f;
#pragma omp simd
      for (int64_t t = 0; t < length; ++t) {
        const float x = delta_row[t] + bias;
        dt[t] = softplus ? (x > 20.f ? x : std::log1p(std::exp(x))) : x;  // torch's softplus, threshold 20
        y_row[t] = skip * u_row[t];
      }
      for (int64_t k = 0; k < n_state; ++k) {
        const float a = A_ptr[ch * n_state + k];
        const float* B_row = B_ptr + ((b * groups + g) * n_state + k) * length;
        const float* C_row = C_ptr + ((b * groups + g) * n_state + k) * length;
#pragma omp simd
        for (int64_t t = 0; t < length; ++t) {
          decay[t] = std::exp(dt[t] * a);
          state[t] = dt[t] * u_row[t] * B_row[t];
        }
        float h = 0.f;
        for (int64_t t = 0; t < length; ++t) {  // the recurrence: the only sequential loop
          h = decay[t] * h + state[t];
          state[t] = h;
        }
#pragma omp simd
        for (int64_t t = 0; t < length; ++t) {
          y_row[t] += state[t] * C_row[t];
        }
      }
    }
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("selective_scan_forward", &selective_scan_forward, "Selective scan forward on CPU (float32)");
}
