// Selective scan (Mamba's S6 recurrence) on CPU, forward and backward: fslora.ops.scan_cpu builds this
// file with torch.utils.cpp_extension on first use. The pure-torch "chunked" scan is memory-bound (~15
// passes over b*d*L floats); this kernel reads each input once.
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

// The shapes both entry points take (see selective_scan_forward).
void check_scan_inputs(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
                       const torch::Tensor& B, const torch::Tensor& C, const torch::Tensor& D,
                       const torch::Tensor& delta_bias) {
  check(u, "u", 3);
  check(delta, "delta", 3);
  check(A, "A", 2);
  check(B, "B", 4);
  check(C, "C", 4);
  check(D, "D", -1);
  check(delta_bias, "delta_bias", -1);
  const int64_t dim = u.size(1), groups = B.size(1);
  TORCH_CHECK(delta.sizes() == u.sizes(), "selective_scan_cpu: delta must match u");
  TORCH_CHECK(A.size(0) == dim && groups > 0 && dim % groups == 0, "selective_scan_cpu: bad A or groups");
  TORCH_CHECK(B.sizes() == C.sizes() && B.size(0) == u.size(0) && B.size(2) == A.size(1) &&
                  B.size(3) == u.size(2),
              "selective_scan_cpu: B and C must be (batch, groups, d_state, seqlen)");
  TORCH_CHECK(D.numel() == 0 || D.numel() == dim, "selective_scan_cpu: D must have dim entries");
  TORCH_CHECK(delta_bias.numel() == 0 || delta_bias.numel() == dim,
              "selective_scan_cpu: delta_bias must have dim entries");
}

}  // namespace

// u, delta (b, d, L); A (d, n); B, C (b, G, n, L); D, delta_bias (d) or empty. Returns y (b, d, L).
torch::Tensor selective_scan_forward(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
                                     const torch::Tensor& B, const torch::Tensor& C, const torch::Tensor& D,
                                     const torch::Tensor& delta_bias, bool softplus) {
  check_scan_inputs(u, delta, A, B, C, D, delta_bias);
  const int64_t batch = u.size(0), dim = u.size(1), length = u.size(2);
  const int64_t groups = B.size(1), n_state = A.size(1);

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

// Gradients of selective_scan_forward for gy (b, d, L). Returns du, ddelta (b, d, L), dA (d, n),
// dB, dC (b, G, n, L), dD, ddelta_bias (d) (the last two empty when D / delta_bias are). The forward
// states are recomputed row by row (no memory kept from the forward). Work is split over (batch, group)
// blocks so each block owns its slice of dB and dC; per-channel sums (dA, dD, dbias) go to per-batch
// partials that are summed at the end.
std::vector<torch::Tensor> selective_scan_backward(const torch::Tensor& u, const torch::Tensor& delta,
                                                   const torch::Tensor& A, const torch::Tensor& B,
                                                   const torch::Tensor& C, const torch::Tensor& D,
                                                   const torch::Tensor& delta_bias, bool softplus,
                                                   const torch::Tensor& grad_y) {
  check_scan_inputs(u, delta, A, B, C, D, delta_bias);
  check(grad_y, "grad_y", 3);
  const int64_t batch = u.size(0), dim = u.size(1), length = u.size(2);
  const int64_t groups = B.size(1), n_state = A.size(1), per_group = dim / groups;
  TORCH_CHECK(grad_y.sizes() == u.sizes(), "selective_scan_cpu: grad_y must match u");

  auto du = torch::empty_like(u);
  auto ddelta = torch::empty_like(u);
  auto dB = torch::zeros_like(B);
  auto dC = torch::zeros_like(C);
  auto dA_part = torch::zeros({batch, dim, n_state}, u.options());
  auto dD_part = torch::zeros({batch, dim}, u.options());
  auto dbias_part = torch::zeros({batch, dim}, u.options());
  const float* u_ptr = u.data_ptr<float>();
  const float* delta_ptr = delta.data_ptr<float>();
  const float* A_ptr = A.data_ptr<float>();
  const float* B_ptr = B.data_ptr<float>();
  const float* C_ptr = C.data_ptr<float>();
  const float* D_ptr = D.numel() ? D.data_ptr<float>() : nullptr;
  const float* bias_ptr = delta_bias.numel() ? delta_bias.data_ptr<float>() : nullptr;
  const float* gy_ptr = grad_y.data_ptr<float>();
  float* du_ptr = du.data_ptr<float>();
  float* ddelta_ptr = ddelta.data_ptr<float>();
  float* dB_ptr = dB.data_ptr<float>();
  float* dC_ptr = dC.data_ptr<float>();
  float* dA_ptr = dA_part.data_ptr<float>();
  float* dD_ptr = dD_part.data_ptr<float>();
  float* dbias_ptr = dbias_part.data_ptr<float>();

  at::parallel_for(0, batch * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> dt_buf(length), slope_buf(length), decay_buf(length), h_buf(length), gh_buf(length),
        ddt_buf(length);
    float* dt = dt_buf.data();
    float* slope = slope_buf.data();  // d dt / d delta
    float* decay = decay_buf.data();
    float* h = h_buf.data();
    float* gh = gh_buf.data();
    float* ddt = ddt_buf.data();
    for (int64_t block = begin; block < end; ++block) {
      const int64_t b = block / groups, g = block % groups;
      for (int64_t ch = g * per_group; ch < (g + 1) * per_group && length > 0; ++ch) {
        const int64_t row = b * dim + ch;
        const float* u_row = u_ptr + row * length;
        const float* delta_row = delta_ptr + row * length;
        const float* gy_row = gy_ptr + row * length;
        float* du_row = du_ptr + row * length;
        const float bias = bias_ptr ? bias_ptr[ch] : 0.f;
        const float skip = D_ptr ? D_ptr[ch] : 0.f;
        float dD_acc = 0.f;
#pragma omp simd reduction(+ : dD_acc)
        for (int64_t t = 0; t < length; ++t) {
          const float x = delta_row[t] + bias;
          if (softplus) {
            const bool linear = x > 20.f;
            dt[t] = linear ? x : std::log1p(std::exp(x));
            slope[t] = linear ? 1.f : 1.f / (1.f + std::exp(-x));  // torch's softplus backward
          } else {
            dt[t] = x;
            slope[t] = 1.f;
          }
          ddt[t] = 0.f;
          du_row[t] = skip * gy_row[t];
          dD_acc += gy_row[t] * u_row[t];
        }
        for (int64_t k = 0; k < n_state; ++k) {
          const float a = A_ptr[ch * n_state + k];
          const int64_t bc_offset = ((b * groups + g) * n_state + k) * length;
          const float* B_row = B_ptr + bc_offset;
          const float* C_row = C_ptr + bc_offset;
          float* dB_row = dB_ptr + bc_offset;
          float* dC_row = dC_ptr + bc_offset;
#pragma omp simd
          for (int64_t t = 0; t < length; ++t) {
            decay[t] = std::exp(dt[t] * a);
            h[t] = dt[t] * u_row[t] * B_row[t];
          }
          float state = 0.f;
          for (int64_t t = 0; t < length; ++t) {  // forward states again
            state = decay[t] * state + h[t];
            h[t] = state;
          }
          float carry = 0.f;
          for (int64_t t = length - 1; t >= 0; --t) {  // dL/dh_t, back to front
            const float g_state = gy_row[t] * C_row[t] + carry;
            gh[t] = g_state;
            carry = decay[t] * g_state;
          }
          // t = 0 has no previous state (no gradient through its decay); the loop from t = 1 has no branch
          dC_row[0] += gy_row[0] * h[0];
          dB_row[0] += gh[0] * dt[0] * u_row[0];
          du_row[0] += gh[0] * dt[0] * B_row[0];
          ddt[0] += gh[0] * u_row[0] * B_row[0];
          float dA_acc = 0.f;
#pragma omp simd reduction(+ : dA_acc)
          for (int64_t t = 1; t < length; ++t) {
            const float g_rate = gh[t] * h[t - 1] * decay[t];  // through decay_t = exp(dt_t * a)
            dC_row[t] += gy_row[t] * h[t];
            dB_row[t] += gh[t] * dt[t] * u_row[t];
            du_row[t] += gh[t] * dt[t] * B_row[t];
            ddt[t] += gh[t] * u_row[t] * B_row[t] + g_rate * a;
            dA_acc += g_rate * dt[t];
          }
          dA_ptr[row * n_state + k] = dA_acc;
        }
        float* ddelta_row = ddelta_ptr + row * length;
        float dbias_acc = 0.f;
#pragma omp simd reduction(+ : dbias_acc)
        for (int64_t t = 0; t < length; ++t) {
          ddelta_row[t] = ddt[t] * slope[t];
          dbias_acc += ddelta_row[t];
        }
        dD_ptr[row] = dD_acc;
        dbias_ptr[row] = dbias_acc;
      }
    }
  });
  auto empty = u.new_empty({0});
  return {du,
          ddelta,
          dA_part.sum(0),
          dB,
          dC,
          D.numel() ? dD_part.sum(0) : empty,
          delta_bias.numel() ? dbias_part.sum(0) : empty};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("selective_scan_forward", &selective_scan_forward, "Selective scan forward on CPU (float32)");
  m.def("selective_scan_backward", &selective_scan_backward, "Its gradients (float32)");
}
