// CUDA mixed-precision matmul with a fused epilogue (contract: unet/matmul.h), the twin of
// cpu/matmul.cpp. This file chooses the path and the tile plan, runs the split-K
// reduction and the bias gradient, and holds the SIMT path; the tensor-core paths are
// cuda/matmul_sm90.cu (wgmma + TMA, Hopper) and cuda/matmul_sm80.cu (mma.sync, Ampere on).
//
// Paths, in the order `auto` tries them:
//   sm90  fp16/bf16, compute capability 9.x, a build with sm_90a code, A [M,K] and B [N,K]
//         (trans_a false, trans_b true) with 16-byte aligned rows;
//   sm80  fp16/bf16 on compute capability 8.0 or later, any transposes, 16-byte aligned rows;
//   simt  everything else: fp32 inputs (exact fp32 products: no TF32), unaligned rows or
//         leading dimensions, older GPUs. gemm_tiled.cuh's shared-memory tiles, batched.
// UNET_MATMUL_PATH=sm90|sm80|simt|auto, read once per process, forces the first path to
// try; a shape the forced path cannot take goes down the list (sm90 -> sm80 -> simt), a
// device without the forced path's instructions, or a build without sm_90a code for a
// forced sm90, is an error.
//
// Tile plan: a tensor-core path takes its large tile (128 x 128), unless that leaves the
// grid under one wave of blocks or M or N fits its small tile, then the small one (sm80
// 64 x 64, sm90 64 x 128); the SIMT path's row tile follows M (16, 32, 64 rows by 64
// columns). If the grid is still under one wave, K is split into up to 16 ranges of at
// least 256 elements: each block writes fp32 partial sums, and a second kernel adds them
// in split order and applies the epilogue: deterministic, no atomics. Such grids have
// fewer than one wave of blocks, so the partial sums take at most 16 * #SMs * 128 * 128
// * 4 bytes (about 140 MB on 132 SMs).
// The bias gradient is its own small kernel, summing in a fixed order too.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda_check.cuh"
#include "gemm_tiled.cuh"
#include "matmul_common.cuh"

namespace unet::cuda {
namespace matmul_detail {
namespace {

enum class Path { Auto, Sm90, Sm80, Simt };

// UNET_MATMUL_PATH, read at the first call. A bad value fails every call.
Path requested_path() {
  static const std::string value = [] {
    const char* v = std::getenv("UNET_MATMUL_PATH");
    return std::string(v ? v : "");
  }();
  if (value.empty() || value == "auto") return Path::Auto;
  if (value == "sm90") return Path::Sm90;
  if (value == "sm80") return Path::Sm80;
  if (value == "simt") return Path::Simt;
  throw std::invalid_argument("UNET_MATMUL_PATH must be 'sm90', 'sm80', 'simt' or 'auto', got '" + value + "'");
}

struct DeviceInfo {
  int major = 0, minor = 0, sms = 1;
  int pools = 0;  // stream-ordered allocation (the split-K workspace) supported
};
DeviceInfo device_info(int device) {
  DeviceInfo d;
  check(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, device), "compute capability");
  check(cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, device), "compute capability");
  check(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device), "multiprocessor count");
  check(cudaDeviceGetAttribute(&d.pools, cudaDevAttrMemoryPoolsSupported, device), "memory pool support");
  return d;
}

int64_t grid_blocks(const MatmulArgs& a, const TileShape& t) {
  return ceil_div(a.M, t.bm) * ceil_div(a.N, t.bn) * a.batch;
}

// Sets plan's K split for tile t: under one wave of blocks, up to 16 ranges of at least
// 256 elements, so that about one wave runs (none where the workspace cannot be had).
Plan split_k(const MatmulArgs& a, const TileShape& t, const DeviceInfo& dev, Plan plan) {
  const int64_t k_tiles = ceil_div(a.K, t.bk), min_k_tiles = 256 / t.bk, blocks = grid_blocks(a, t);
  int64_t splits = 1;
  if (blocks < dev.sms && dev.pools)
    splits = std::max<int64_t>(std::min<int64_t>({dev.sms / blocks, k_tiles / min_k_tiles, 16}), 1);
  plan.k_per_split = ceil_div(k_tiles, splits) * t.bk;
  plan.splits = static_cast<int>(a.K > 0 ? ceil_div(a.K, plan.k_per_split) : 1);  // no empty split
  return plan;
}

// A tensor-core path's plan: its large tile, or its small one where M or N fits the
// small one or the large leaves the grid under one wave; then the K split.
Plan choose_plan(const MatmulArgs& a, const TileShape (&tiles)[2], const DeviceInfo& dev) {
  Plan plan;
  if (a.M <= tiles[1].bm || a.N <= tiles[1].bn || grid_blocks(a, tiles[0]) < dev.sms) plan.tile = 1;
  return split_k(a, tiles[plan.tile], dev, plan);
}

// The SIMT path's plan: gemm_tiled.cuh picks the row tile, then the K split.
Plan simt_plan(const MatmulArgs& a, const DeviceInfo& dev) {
  return split_k(a, TileShape{gemm::row_tile(a.M), gemm::kBN, gemm::kBK}, dev, Plan{});
}

// ---- split-K reduction ----

// For every element of the batch of C: the partial sums of all splits, added in split
// order, through the epilogue.
__global__ void __launch_bounds__(256)
    split_reduce_kernel(const float* __restrict__ partial, int splits, int64_t batch, int64_t M, int64_t N,
                        Epilogue epi) {
  const int64_t total = batch * M * N;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += partial[s * total + e];
    const int64_t p = e / (M * N), r = e % (M * N);
    epi(p, r / N, r % N, sum);
  }
}

unsigned grid_stride_blocks(int64_t n, int threads) {
  return static_cast<unsigned>(std::clamp<int64_t>(ceil_div(n, threads), 1, 65535));
}

// ---- bias gradient: bias_grad[i] = sum over p, k of op(A_p)(i, k) ----

// trans_a false (rows of A contiguous): a warp per row, lanes over k, a fixed shuffle tree.
// trans_a true (columns): 32 rows of op(A) per block across the lanes, 8 k phases across
// the warps, added in phase order.
template <bool TRANS_A>
__global__ void __launch_bounds__(256)
    bias_grad_kernel(const void* __restrict__ a, DType dtype, int64_t M, int64_t K, int64_t lda, int64_t stride_a,
                     int64_t batch, float* __restrict__ out) {
  __shared__ float partial[8][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if constexpr (!TRANS_A) {
    const int64_t i = blockIdx.x * int64_t(8) + warp;
    if (i >= M) return;  // whole warps: no barrier follows
    float sum = 0.0f;
    for (int64_t p = 0; p < batch; ++p)
      for (int64_t k = lane; k < K; k += 32) sum += load_float(a, dtype, p * stride_a + i * lda + k);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) out[i] = sum;
  } else {
    const int64_t i = blockIdx.x * int64_t(32) + lane;
    float sum = 0.0f;
    if (i < M)
      for (int64_t p = 0; p < batch; ++p)
        for (int64_t k = warp; k < K; k += 8) sum += load_float(a, dtype, p * stride_a + k * lda + i);
    partial[warp][lane] = sum;
    __syncthreads();
    if (warp == 0 && i < M) {
      float total = 0.0f;
      for (int w = 0; w < 8; ++w) total += partial[w][lane];
      out[i] = total;
    }
  }
}

void bias_grad(const MatmulArgs& a, cudaStream_t stream) {
  if (a.trans_a)
    bias_grad_kernel<true><<<static_cast<unsigned>(ceil_div(a.M, 32)), 256, 0, stream>>>(
        a.a, a.ab_dtype, a.M, a.K, a.lda, a.stride_a, a.batch, a.bias_grad);
  else
    bias_grad_kernel<false><<<static_cast<unsigned>(ceil_div(a.M, 8)), 256, 0, stream>>>(
        a.a, a.ab_dtype, a.M, a.K, a.lda, a.stride_a, a.batch, a.bias_grad);
  check(cudaGetLastError(), "bias_grad kernel launch");
}

// ---- the SIMT path ----

// gemm_tiled's epilogue index z = p * splits + split, to the sink.
struct SimtSink {
  Sink sink;
  int splits;
  __device__ __forceinline__ void operator()(int64_t z, int64_t i, int64_t j, float acc) const {
    sink(z % splits, z / splits, i, j, acc);
  }
};

template <typename S, bool A_T, bool B_T>
void simt_layout(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  const gemm::Operand<float, S> A{static_cast<const S*>(a.a), a.lda, nullptr, 0, a.stride_a};
  const gemm::Operand<float, S> B{static_cast<const S*>(a.b), a.ldb, nullptr, 0, a.stride_b};
  gemm::launch_batched<float, A_T, B_T>(a.M, a.N, a.K, a.batch, A, B, SimtSink{sink, plan.splits}, stream,
                                        "matmul (CUDA): simt kernel launch", plan.splits, plan.k_per_split);
}

template <typename S>
void simt_typed(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  if (!a.trans_a && !a.trans_b) simt_layout<S, false, false>(a, plan, sink, stream);
  if (!a.trans_a && a.trans_b) simt_layout<S, false, true>(a, plan, sink, stream);
  if (a.trans_a && !a.trans_b) simt_layout<S, true, false>(a, plan, sink, stream);
  if (a.trans_a && a.trans_b) simt_layout<S, true, true>(a, plan, sink, stream);
}

void launch_simt(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  if (a.ab_dtype == DType::Float16)
    simt_typed<__half>(a, plan, sink, stream);
  else if (a.ab_dtype == DType::BFloat16)
    simt_typed<__nv_bfloat16>(a, plan, sink, stream);
  else
    simt_typed<float>(a, plan, sink, stream);
}

// ---- dispatch ----

// Runs a path with its plan (and the split-K reduction when the plan splits). False,
// launching nothing, where the sm90 path turns the problem down.
template <class Launch>
bool run_planned(const MatmulArgs& a, const Plan& plan, Launch&& launch, cudaStream_t stream) {
  const Epilogue epi(a);
  if (plan.splits == 1) return launch(Sink{epi, nullptr, a.M, a.N, a.batch});
  const int64_t total = a.batch * a.M * a.N;
  const DeviceBuffer<float> partial(plan.splits * total, stream, "matmul (CUDA): split-K workspace");
  if (!launch(Sink{epi, partial.p, a.M, a.N, a.batch})) return false;
  split_reduce_kernel<<<grid_stride_blocks(total, 256), 256, 0, stream>>>(partial.p, plan.splits, a.batch,
                                                                          a.M, a.N, epi);
  check(cudaGetLastError(), "split-K reduction launch");
  return true;
}

void product(const MatmulArgs& a, int device, cudaStream_t stream) {
  const Path forced = requested_path();
  const DeviceInfo dev = device_info(device);
  const std::string cc = std::to_string(dev.major) + "." + std::to_string(dev.minor);
  if (forced == Path::Sm90 && dev.major != 9)
    throw std::runtime_error("matmul (CUDA): UNET_MATMUL_PATH=sm90 needs a compute capability 9.x GPU, device " +
                             std::to_string(device) + " is " + cc);
  if (forced == Path::Sm80 && dev.major < 8)
    throw std::runtime_error("matmul (CUDA): UNET_MATMUL_PATH=sm80 needs compute capability 8.0 or later, device " +
                             std::to_string(device) + " is " + cc);

  if (forced == Path::Sm90 && !sm90_compiled())  // the device is 9.x here
    throw std::runtime_error("matmul (CUDA): UNET_MATMUL_PATH=sm90, but this build has no sm_90a code "
                             "(build with UNET_CUDA_ARCHS including 90a)");
  if ((forced == Path::Auto || forced == Path::Sm90) && dev.major == 9 && sm90_compiled() && sm90_takes(a)) {
    const Plan plan = choose_plan(a, kSm90Tiles, dev);
    auto launch = [&](const Sink& s) { return launch_sm90(a, plan, s, stream); };
    if (run_planned(a, plan, launch, stream)) return;  // else the driver refused the tensor maps
  }
  if (forced != Path::Simt && dev.major >= 8 && rows_16b_aligned(a)) {
    const Plan plan = choose_plan(a, kSm80Tiles, dev);
    auto launch = [&](const Sink& s) {
      launch_sm80(a, plan, s, stream);
      return true;
    };
    run_planned(a, plan, launch, stream);
    return;
  }
  const Plan plan = simt_plan(a, dev);
  auto launch = [&](const Sink& s) {
    launch_simt(a, plan, s, stream);
    return true;
  };
  run_planned(a, plan, launch, stream);
}

}  // namespace
}  // namespace matmul_detail

void matmul(const MatmulArgs& args, uintptr_t stream, int device) {
  using namespace matmul_detail;
  if (args.M <= 0) return;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  DeviceGuard guard(device);
  if (args.N > 0 && args.batch > 0) product(args, device, s);
  if (args.bias_grad) bias_grad(args, s);
}

}  // namespace unet::cuda
