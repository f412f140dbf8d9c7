// The Ampere tensor-core path of the CUDA matmul (sm_80 and later): fp16/bf16 A and B,
// fp32 accumulation with mma.sync.m16n8k16, a multi-stage cp.async pipeline through shared
// memory and ldmatrix fragment loads (the building blocks and the shared-memory layouts of
// every transpose combination are in mma_sm80.cuh).
//
// Edges: the 16-byte copies of rows or columns past the matrix, and the part of a copy
// past K (or M, N) are zero-filled by cp.async's source size, so any M, N, K is exact;
// what the path needs is 16-byte aligned rows (rows_16b_aligned in matmul_common.cuh).
#include "matmul_common.cuh"
#include "mma_sm80.cuh"

#include <algorithm>

namespace unet::cuda::matmul_detail {
namespace {

using namespace mma;

constexpr int kStages = 4;

template <int BM, int BN, int BK, int WM, int WN, bool A_KM, bool B_KM>
struct Sm80Config {
  static constexpr int kThreads = WM * WN * 32;
  static constexpr int kWarpM = BM / WM, kWarpN = BN / WN;
  static constexpr int kMI = kWarpM / 16, kNI = kWarpN / 8;
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0 && BK % 16 == 0, "warp tile must fit mma");
  using ATile = OperandTile<BM, BK, A_KM>;
  using BTile = OperandTile<BN, BK, B_KM>;
  static constexpr int kStageElems = ATile::kElems + BTile::kElems;
  static constexpr size_t kSmemBytes = size_t(kStages) * kStageElems * 2;
};

template <typename T, int BM, int BN, int BK, int WM, int WN, bool A_KM, bool B_KM>
__global__ void __launch_bounds__(WM* WN * 32)
    matmul_sm80_kernel(const T* __restrict__ A, const T* __restrict__ B, int64_t M, int64_t N, int64_t K,
                       int64_t lda, int64_t stride_a, int64_t ldb, int64_t stride_b, Plan plan, Sink sink,
                       int64_t z0) {
  using C = Sm80Config<BM, BN, BK, WM, WN, A_KM, B_KM>;
  extern __shared__ uint4 smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / WN, wn = warp % WN;
  const int64_t m0 = int64_t(blockIdx.x) * BM, n0 = int64_t(blockIdx.y) * BN;
  const BatchSplit bs = batch_split(z0 + blockIdx.z, plan, K);
  const T* a = A + bs.p * stride_a;
  const T* b = B + bs.p * stride_b;

  float acc[C::kMI][C::kNI][4];
#pragma unroll
  for (int i = 0; i < C::kMI; ++i)
#pragma unroll
    for (int j = 0; j < C::kNI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  const int64_t k_tiles = bs.k_end > bs.k_begin ? ceil_div(bs.k_end - bs.k_begin, BK) : 0;
  auto load_stage = [&](int64_t kt) {
    T* s = smem + (kt % kStages) * C::kStageElems;
    const int64_t k0 = bs.k_begin + kt * BK;
    C::ATile::template load<C::kThreads>(s, a, lda, m0, M, k0, K, tid);
    C::BTile::template load<C::kThreads>(s + C::ATile::kElems, b, ldb, n0, N, k0, K, tid);
  };

  // Stages 0..kStages-2 in flight; one commit group per k tile (empty ones past the end
  // keep the group count, and so wait_group's meaning, fixed).
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s);
    cp_async_commit();
  }
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();  // tile kt has landed (this thread's copies)
    __syncthreads();               // ... everyone's; and everyone is done with tile kt-1
    if (kt + kStages - 1 < k_tiles) load_stage(kt + kStages - 1);  // into tile kt-1's stage
    cp_async_commit();

    const T* sa = smem + (kt % kStages) * C::kStageElems;
    const T* sb = sa + C::ATile::kElems;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t af[C::kMI][4], bf[C::kNI][2];
#pragma unroll
      for (int i = 0; i < C::kMI; ++i)
        a_fragment<BM, BK, A_KM>(af[i], sa, wm * C::kWarpM + i * 16, kk, lane);
#pragma unroll
      for (int j = 0; j < C::kNI; j += 2)
        b_fragments<BN, BK, B_KM>(bf[j], bf[j + 1], sb, wn * C::kWarpN + j * 8, kk, lane);
#pragma unroll
      for (int i = 0; i < C::kMI; ++i)
#pragma unroll
        for (int j = 0; j < C::kNI; ++j) mma_16816<T>(acc[i][j], af[i], bf[j]);
    }
  }
  cp_async_wait<0>();  // nothing real is left in flight; empty groups only

  // Accumulator layout of m16n8: e0,e1 at (row g, cols 2t, 2t+1), e2,e3 at row g+8.
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < C::kMI; ++i)
#pragma unroll
    for (int j = 0; j < C::kNI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = m0 + wm * C::kWarpM + i * 16 + g + (e / 2) * 8;
        const int64_t col = n0 + wn * C::kWarpN + j * 8 + 2 * t + e % 2;
        if (row < M && col < N) sink(bs.split, bs.p, row, col, acc[i][j][e]);
      }
}

template <typename T, int BM, int BN, int WM, int WN, bool A_KM, bool B_KM>
void launch_tile(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  constexpr int BK = 32;
  using C = Sm80Config<BM, BN, BK, WM, WN, A_KM, B_KM>;
  auto kernel = matmul_sm80_kernel<T, BM, BN, BK, WM, WN, A_KM, B_KM>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(C::kSmemBytes)),
        "sm80 shared memory size");
  const int64_t grid_y = ceil_div(a.N, BN);
  if (grid_y > 65535)
    throw std::invalid_argument("matmul (CUDA): N = " + std::to_string(a.N) + " is too large");
  const int64_t zs = a.batch * plan.splits;
  for (int64_t z0 = 0; z0 < zs; z0 += 65535) {
    const dim3 grid(static_cast<unsigned>(ceil_div(a.M, BM)), static_cast<unsigned>(grid_y),
                    static_cast<unsigned>(std::min<int64_t>(zs - z0, 65535)));
    kernel<<<grid, C::kThreads, C::kSmemBytes, stream>>>(
        static_cast<const T*>(a.a), static_cast<const T*>(a.b), a.M, a.N, a.K, a.lda, a.stride_a, a.ldb,
        a.stride_b, plan, sink, z0);
    check(cudaGetLastError(), "sm80 kernel launch");
  }
}

template <typename T, bool A_KM, bool B_KM>
void launch_layout(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  static_assert(kSm80Tiles[0].bm == 128 && kSm80Tiles[0].bn == 128 && kSm80Tiles[1].bm == 64 &&
                    kSm80Tiles[1].bn == 64 && kSm80Tiles[0].bk == 32 && kSm80Tiles[1].bk == 32,
                "kSm80Tiles must describe the tiles launched here");
  if (plan.tile == 0)
    launch_tile<T, 128, 128, 2, 4, A_KM, B_KM>(a, plan, sink, stream);  // warp tile 64 x 32
  else
    launch_tile<T, 64, 64, 2, 2, A_KM, B_KM>(a, plan, sink, stream);  // warp tile 32 x 32
}

template <typename T>
void launch_typed(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  const bool a_km = !a.trans_a, b_km = a.trans_b;
  if (a_km && b_km) launch_layout<T, true, true>(a, plan, sink, stream);
  if (a_km && !b_km) launch_layout<T, true, false>(a, plan, sink, stream);
  if (!a_km && b_km) launch_layout<T, false, true>(a, plan, sink, stream);
  if (!a_km && !b_km) launch_layout<T, false, false>(a, plan, sink, stream);
}

}  // namespace

void launch_sm80(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  if (a.ab_dtype == DType::Float16)
    launch_typed<__half>(a, plan, sink, stream);
  else
    launch_typed<__nv_bfloat16>(a, plan, sink, stream);
}

}  // namespace unet::cuda::matmul_detail
