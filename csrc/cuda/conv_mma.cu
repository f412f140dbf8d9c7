// Mixed-precision CUDA convolutions (contract: ConvMixed*Args in unet/conv.h): fp16/bf16
// inputs, fp32 accumulation on tensor cores (mma.sync.m16n8k16, sm_80 and later), as
// implicit GEMMs whose operand loads compute the im2col addresses (no column buffer):
//
//   forward          out[c, q]     = sum_k W[c, k] patch(k, q)        M = C_out_g, N = N*P, K = C_in_g*taps
//   backward-data    grad_x[ci, i] = sum_(c,t) W[c, ci, t] g(c, t, i)  M = C_in_g, N = N*H*W, K = C_out_g*taps
//   backward-weight  grad_W[c, k]  = sum_q g[c, q] patch(k, q)        M = C_out_g, N = C_in_g*taps, K = N*P
//
// (q an output position (n, oy, ox), k = (ci, ky, kx) a patch element, i an input position,
// g = grad_out * act'(preact), rounded to the 16-bit dtype.) One kernel template runs all
// three: a BM x BN block tile, k tiles of 32 that every thread gathers into registers while
// the tensor cores work on the previous tile, then stores into the other half of a
// double-buffered shared-memory tile that ldmatrix reads (layouts: mma_sm80.cuh). The
// gathers' index arithmetic is done ahead in shared-memory tables: one entry per column of
// the block (built once) and one per k of a tile (built a tile ahead), so a load is two
// table reads, a few adds and a bounds test. Grids under two waves of blocks split K;
// their partial sums go to a float32 workspace and a second kernel adds them in split
// order: deterministic, no atomics.
//
// Depthwise convolutions, and GPUs before sm_80, take exact float32 copies of the inputs
// through the fp32 kernels of cuda/conv.cu instead (UNET_CONV_PATH forces one path: see
// takes_mma). When an activation is fused, g is
// rounded into a 16-bit temporary once, before either path reads it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "conv_common.cuh"
#include "conv_mma_problems.cuh"
#include "cuda_check.cuh"
#include "mma_sm80.cuh"
#include "unet/half.h"

namespace unet::cuda {
namespace {

int64_t tiles_of(int64_t n, int64_t tile) { return (n + tile - 1) / tile; }

// The 16-bit patterns of S (__half or __nv_bfloat16) and float32: widening is exact,
// narrowing rounds to nearest even exactly as the CPU does (unet/half.h).
template <typename S>
__device__ __forceinline__ float widen(uint16_t v) {
  if constexpr (std::is_same_v<S, __half>)
    return half_to_float(v);
  else
    return bfloat16_to_float(v);
}
template <typename S>
__device__ __forceinline__ uint16_t narrow(float v) {
  if constexpr (std::is_same_v<S, __half>)
    return float_to_half(v);
  else
    return float_to_bfloat16(v);
}

// ---- the kernel ----

constexpr int kBK = 32;

template <typename S, int BM, int BN, int WM, int WN, class Problem>
__global__ void __launch_bounds__(WM* WN * 32)
    conv_mma_kernel(Problem prob, int64_t k_per_split, float* __restrict__ partial) {
  constexpr int kThreads = WM * WN * 32, kWarpM = BM / WM, kWarpN = BN / WN;
  constexpr int kMI = kWarpM / 16, kNI = kWarpN / 8;
  constexpr bool kAKM = Problem::kAKMajor, kBKM = Problem::kBKMajor;
  using ATile = mma::OperandTile<BM, kBK, kAKM>;
  using BTile = mma::OperandTile<BN, kBK, kBKM>;
  constexpr int kALoads = BM * kBK / kThreads, kBLoads = BN * kBK / kThreads;
  static_assert(BM * kBK % kThreads == 0 && BN * kBK % kThreads == 0, "tiles must divide evenly");
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0, "warp tile must fit mma");
  static_assert(kThreads >= kBK, "one thread per k entry of a tile");

  __shared__ __align__(16) uint16_t tiles[2][ATile::kElems + BTile::kElems];
  __shared__ typename Problem::ColEntry cols[BN];
  __shared__ typename Problem::KEntry ks[2][kBK];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / WN, wn = warp % WN;
  const int64_t M = prob.M(), N = prob.N(), K = prob.K();
  const int64_t n0 = int64_t(blockIdx.x) * BN, m0 = int64_t(blockIdx.y) * BM;
  const int64_t k_begin = int64_t(blockIdx.z) * k_per_split;
  const int64_t k_end = k_begin + k_per_split < K ? k_begin + k_per_split : K;
  const int64_t k_tiles = k_end > k_begin ? (k_end - k_begin + kBK - 1) / kBK : 0;

  for (int j = tid; j < BN; j += kThreads)
    if (n0 + j < N) cols[j] = prob.col_entry(n0 + j);
  auto fill_k_table = [&](int64_t kt) {
    const int64_t k = k_begin + kt * kBK + tid;
    if (tid < kBK && k < k_end) ks[kt % 2][tid] = prob.k_entry(k);
  };

  // Element l of a thread's share of a tile: (row, kk), threads walking k or rows.
  auto a_element = [&](int l, int& r, int& kk) {
    const int e = tid + l * kThreads;
    r = kAKM ? e / kBK : e % BM;
    kk = kAKM ? e % kBK : e / BM;
  };
  auto b_element = [&](int l, int& c, int& kk) {
    const int e = tid + l * kThreads;
    c = kBKM ? e / kBK : e % BN;
    kk = kBKM ? e % kBK : e / BN;
  };

  uint16_t ra[kALoads], rb[kBLoads];
  auto gather = [&](int64_t kt) {  // reads ks[kt % 2]
    const int64_t k0 = k_begin + kt * kBK;
    const typename Problem::KEntry* kt_table = ks[kt % 2];
#pragma unroll
    for (int l = 0; l < kALoads; ++l) {
      int r, kk;
      a_element(l, r, kk);
      ra[l] = (m0 + r < M && k0 + kk < k_end) ? prob.a(m0 + r, k0 + kk, kt_table[kk]) : uint16_t(0);
    }
#pragma unroll
    for (int l = 0; l < kBLoads; ++l) {
      int c, kk;
      b_element(l, c, kk);
      rb[l] = (n0 + c < N && k0 + kk < k_end) ? prob.b(kt_table[kk], cols[c]) : uint16_t(0);
    }
  };
  auto store_tiles = [&](int buf) {
    uint16_t* sa = tiles[buf];
    uint16_t* sb = sa + ATile::kElems;
#pragma unroll
    for (int l = 0; l < kALoads; ++l) {
      int r, kk;
      a_element(l, r, kk);
      sa[kAKM ? r * ATile::kPitch + kk : kk * ATile::kPitch + r] = ra[l];
    }
#pragma unroll
    for (int l = 0; l < kBLoads; ++l) {
      int c, kk;
      b_element(l, c, kk);
      sb[kBKM ? c * BTile::kPitch + kk : kk * BTile::kPitch + c] = rb[l];
    }
  };

  float acc[kMI][kNI][4];
#pragma unroll
  for (int i = 0; i < kMI; ++i)
#pragma unroll
    for (int j = 0; j < kNI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  fill_k_table(0);
  if (k_tiles > 1) fill_k_table(1);
  __syncthreads();  // the column table and the first two k tables
  if (k_tiles > 0) {
    gather(0);
    store_tiles(0);
  }
  __syncthreads();
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    // Every buffer written here was last read before the barrier that ended the previous
    // iteration: tiles[(kt+1)%2] by its mma, ks[kt%2] by gather(kt).
    if (kt + 1 < k_tiles) gather(kt + 1);  // global loads in flight during the mma below
    const uint16_t* sa = tiles[kt % 2];
    const uint16_t* sb = sa + ATile::kElems;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t af[kMI][4], bf[kNI][2];
#pragma unroll
      for (int i = 0; i < kMI; ++i) mma::a_fragment<BM, kBK, kAKM>(af[i], sa, wm * kWarpM + i * 16, kk, lane);
#pragma unroll
      for (int j = 0; j < kNI; j += 2)
        mma::b_fragments<BN, kBK, kBKM>(bf[j], bf[j + 1], sb, wn * kWarpN + j * 8, kk, lane);
#pragma unroll
      for (int i = 0; i < kMI; ++i)
#pragma unroll
        for (int j = 0; j < kNI; ++j) mma::mma_16816<S>(acc[i][j], af[i], bf[j]);
    }
    if (kt + 1 < k_tiles) store_tiles((kt + 1) % 2);
    if (kt + 2 < k_tiles) fill_k_table(kt + 2);
    __syncthreads();
  }

  // Accumulator layout of m16n8: e0,e1 at (row g, cols 2t, 2t+1), e2,e3 at row g+8.
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < kMI; ++i)
#pragma unroll
    for (int j = 0; j < kNI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = m0 + wm * kWarpM + i * 16 + g + (e / 2) * 8;
        const int64_t col = n0 + wn * kWarpN + j * 8 + 2 * t + e % 2;
        if (row >= M || col >= N) continue;
        if (partial)
          partial[(int64_t(blockIdx.z) * M + row) * N + col] = acc[i][j][e];
        else
          prob.store(row, col, acc[i][j][e]);
      }
}

// The partial sums of every split, added in split order, to the problem's store.
template <class Problem>
__global__ void __launch_bounds__(256)
    split_sum_kernel(Problem prob, const float* __restrict__ partial, int splits, int64_t M, int64_t N) {
  const int64_t total = M * N;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += partial[s * total + e];
    prob.store(e / N, e % N, sum);
  }
}

struct DeviceProps {
  int major = 0, sms = 1;
};
DeviceProps device_props(int device) {
  DeviceProps p;
  check(cudaDeviceGetAttribute(&p.major, cudaDevAttrComputeCapabilityMajor, device), "conv (CUDA): compute capability");
  check(cudaDeviceGetAttribute(&p.sms, cudaDevAttrMultiProcessorCount, device), "conv (CUDA): multiprocessor count");
  return p;
}

template <typename S, int BM, int BN, int WM, int WN, class Problem>
void launch(const Problem& prob, const DeviceProps& dev, cudaStream_t stream, const char* what) {
  const int64_t M = prob.M(), N = prob.N(), K = prob.K();
  const int64_t row_tiles = tiles_of(M, BM), col_tiles = tiles_of(N, BN), blocks = row_tiles * col_tiles;
  if (row_tiles > 65535 || col_tiles > 2147483647LL)
    throw std::invalid_argument(std::string(what) + ": too large (" + std::to_string(M) + " x " +
                                std::to_string(N) + " outputs)");
  // Under two waves of blocks: K in up to 64 ranges of at least 8 k tiles, for about two
  // waves; the partial sums then take at most 2 * #SMs * BM * BN floats.
  const int64_t k_tiles = tiles_of(K, kBK);
  int64_t splits = 1;
  if (blocks < 2 * dev.sms)
    splits = std::clamp<int64_t>(std::min<int64_t>(2 * dev.sms / blocks, k_tiles / 8), 1, 64);
  const int64_t k_per_split = tiles_of(k_tiles, splits) * kBK;
  if (K > 0) splits = tiles_of(K, k_per_split);  // no empty split
  const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(row_tiles), static_cast<unsigned>(splits));
  constexpr int kThreads = WM * WN * 32;
  if (splits == 1) {
    conv_mma_kernel<S, BM, BN, WM, WN><<<grid, kThreads, 0, stream>>>(prob, k_per_split, nullptr);
    return check(cudaGetLastError(), what);
  }
  const DeviceBuffer<float> partial(splits * M * N, stream, what);
  conv_mma_kernel<S, BM, BN, WM, WN><<<grid, kThreads, 0, stream>>>(prob, k_per_split, partial.p);
  check(cudaGetLastError(), what);
  const unsigned sum_blocks = static_cast<unsigned>(std::clamp<int64_t>(tiles_of(M * N, 256), 1, 65535));
  split_sum_kernel<<<sum_blocks, 256, 0, stream>>>(prob, partial.p, static_cast<int>(splits), M, N);
  check(cudaGetLastError(), what);
}

// The large tile (128 x 128, 8 warps of 64 x 32) where it fills the GPU, else 64 x 64
// (4 warps of 32 x 32): convolutions with few output channels or positions.
template <typename S, class Problem>
void run(const Problem& prob, const DeviceProps& dev, cudaStream_t stream, const char* what) {
  if (prob.M() <= 0 || prob.N() <= 0) return;
  const bool large = prob.M() > 64 && tiles_of(prob.M(), 128) * tiles_of(prob.N(), 128) >= dev.sms;
  if (large)
    launch<S, 128, 128, 2, 4>(prob, dev, stream, what);
  else
    launch<S, 64, 64, 2, 2>(prob, dev, stream, what);
}

// ---- conversions for the float32 fallback and the rounded g ----

constexpr int kPointwiseThreads = 256;

unsigned pointwise_blocks(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>(tiles_of(n, kPointwiseThreads), 1, 4096));
}

template <typename S>
__global__ void widen_kernel(const uint16_t* __restrict__ src, float* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = widen<S>(src[i]);
}

template <typename S>
__global__ void rounded_gradient_kernel(const uint16_t* __restrict__ grad_out, const float* __restrict__ preact,
                                        Activation act, uint16_t* __restrict__ g, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    g[i] = narrow<S>(widen<S>(grad_out[i]) * activation_derivative(act, preact[i]));
}

// A 16-bit array as exact float32 copies in temporary memory (none for a null src).
template <typename S>
class Widened {
 public:
  Widened(const void* src, int64_t n, cudaStream_t stream)
      : memory_(src ? n : 0, stream, "conv (CUDA): float32 copy") {
    if (!memory_.p) return;
    widen_kernel<S><<<pointwise_blocks(n), kPointwiseThreads, 0, stream>>>(static_cast<const uint16_t*>(src),
                                                                           memory_.p, n);
    check(cudaGetLastError(), "conv (CUDA): widen launch");
  }
  const float* get() const { return memory_.p; }

 private:
  DeviceBuffer<float> memory_;
};

// g at an offset of grad_out, as float (the bias gradient's loader).
template <typename S>
struct WidenedAt {
  const uint16_t* g;
  __device__ __forceinline__ float at(int64_t offset) const { return widen<S>(g[offset]); }
};

// UNET_CONV_PATH, read at every call: 'sm80' takes the tensor-core path for every
// convolution (depthwise too) or throws where the GPU has no mma.sync, 'simt' always the
// float32 copies, 'auto' or unset: the tensor-core path on sm_80 and later except for
// depthwise convolutions.
bool takes_mma(const ConvGeometry& g, const DeviceProps& dev) {
  const char* v = std::getenv("UNET_CONV_PATH");
  const std::string path = v ? v : "";
  if (path == "simt") return false;
  if (path == "sm80") {
    if (dev.major < 8)
      throw std::runtime_error("conv (CUDA): UNET_CONV_PATH=sm80 needs compute capability 8.0 or later");
    return true;
  }
  if (!path.empty() && path != "auto")
    throw std::invalid_argument("UNET_CONV_PATH must be 'sm80', 'simt' or 'auto', got '" + path + "'");
  return dev.major >= 8 && !is_depthwise(g);
}

template <typename S>
void forward_typed(const ConvMixedForwardArgs& a, cudaStream_t stream, int device) {
  const ConvGeometry& g = a.geo;
  const DeviceProps dev = device_props(device);
  if (!takes_mma(g, dev)) {
    const Widened<S> x(a.x, g.N * g.C_in * g.H * g.W, stream), w(a.weight, g.C_out * g.K(), stream);
    return conv_forward(ConvForwardArgs<float>{g, x.get(), w.get(), a.bias, a.out, a.preact, a.act},
                        reinterpret_cast<uintptr_t>(stream), device);
  }
  const Dims d = dims_of(g);
  for (int64_t group = 0; group < g.groups; ++group)
    run<S>(ForwardProblem{d, group, static_cast<const uint16_t*>(a.x), static_cast<const uint16_t*>(a.weight),
                          a.bias, a.out, a.preact, a.act},
           dev, stream, "conv forward (CUDA, tensor cores)");
}

template <typename S>
void backward_typed(const ConvMixedBackwardArgs& a, cudaStream_t stream, int device) {
  const ConvGeometry& g = a.geo;
  const Dims d = dims_of(g);
  const DeviceProps dev = device_props(device);
  const int64_t outputs = d.N * d.C_out * d.P;
  const auto* g16 = static_cast<const uint16_t*>(a.grad_out);
  // g, where an activation is fused
  const DeviceBuffer<uint16_t> rounded(a.act != Activation::None ? outputs : 0, stream,
                                       "conv (CUDA): rounded gradient");
  if (rounded.p) {
    rounded_gradient_kernel<S><<<pointwise_blocks(outputs), kPointwiseThreads, 0, stream>>>(
        g16, a.preact, a.act, rounded.p, outputs);
    check(cudaGetLastError(), "conv (CUDA): rounded gradient launch");
    g16 = rounded.p;
  }
  if (!takes_mma(g, dev)) {
    const Widened<S> grad(g16, outputs, stream), x(a.x, g.N * g.C_in * g.H * g.W, stream),
        w(a.weight, g.C_out * g.K(), stream);
    return conv_backward(ConvBackwardArgs<float>{g, grad.get(), x.get(), w.get(), nullptr, Activation::None,
                                                 a.grad_x, a.grad_weight, a.grad_bias},
                         reinterpret_cast<uintptr_t>(stream), device);
  }
  if (a.grad_bias && d.C_out > 0) {
    bias_grad_kernel<float><<<reduce_blocks(d.C_out), kReduceThreads, 0, stream>>>(d, WidenedAt<S>{g16}, a.grad_bias);
    check(cudaGetLastError(), "conv bias gradient launch");
  }
  const auto* x = static_cast<const uint16_t*>(a.x);
  const auto* w = static_cast<const uint16_t*>(a.weight);
  for (int64_t group = 0; group < g.groups; ++group) {
    if (a.grad_x)
      run<S>(DataGradProblem{d, group, g16, w, a.grad_x}, dev, stream, "conv backward-data (CUDA, tensor cores)");
    if (a.grad_weight)
      run<S>(WeightGradProblem{d, group, g16, x, a.grad_weight}, dev, stream,
             "conv backward-weight (CUDA, tensor cores)");
  }
}

}  // namespace

void conv_forward_mixed(const ConvMixedForwardArgs& a, uintptr_t stream, int device) {
  if (a.geo.N * a.geo.H_out() * a.geo.W_out() == 0) return;
  DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (a.dtype == DType::Float16)
    forward_typed<__half>(a, s, device);
  else
    forward_typed<__nv_bfloat16>(a, s, device);
}

void conv_backward_mixed(const ConvMixedBackwardArgs& a, uintptr_t stream, int device) {
  DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (a.dtype == DType::Float16)
    backward_typed<__half>(a, s, device);
  else
    backward_typed<__nv_bfloat16>(a, s, device);
}

}  // namespace unet::cuda
