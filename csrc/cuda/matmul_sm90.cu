// The Hopper tensor-core path of the CUDA matmul (sm_90a only): fp16/bf16 A [M,K] and
// B [N,K] (trans_a false, trans_b true: both K-contiguous, the Linear forward x W^T), fp32
// accumulation with wgmma.mma_async reading both operands from shared memory.
//
// A block computes a (64 * CONSUMERS) x 128 tile of C over its K range in 64-wide k
// tiles. Warpgroup 0 is the producer: one thread issues two TMA bulk tensor copies per k
// tile (A's rows and B's rows, 128-byte swizzled, zero-filled past the matrix edges, so any
// M, N, K is exact) into a ring of kStages stages. Each stage has two mbarriers: `full`
// (the producer's expect_tx arrival plus the copies' bytes complete it) and `empty` (every
// consumer thread arrives once its warpgroup's wgmma reading that stage have retired).
// Warpgroups 1..CONSUMERS each own 64 rows of the tile: per k tile they wait on `full`,
// issue 4 wgmma m64n128k16, commit, and wait until only this group is in flight, which
// retires the previous k tile's group, and release that tile's stage. The accumulators
// (64 fp32 registers per thread) go through the shared epilogue (matmul_common.cuh).
//
// Phases: k tile i uses stage s = i % kStages in round r = i / kStages; consumers wait
// for `full[s]` phase parity r & 1, the producer (from round 1 on) waits for `empty[s]`
// to complete round r - 1, parity (r - 1) & 1. Stage s is released for tile i by the
// consumers' iteration i + 1 (the last tile's stage is never reused), so the producer
// never waits on a release that cannot come.
//
// The tensor maps come from the driver's cuTensorMapEncodeTiled, fetched through the
// runtime (cudaGetDriverEntryPointByVersion): the module links no libcuda.
#include "matmul_common.cuh"

#include <cuda.h>  // CUtensorMap and its enums only; nothing is linked from libcuda
#include <cudaTypedefs.h>

#include <algorithm>
#include <type_traits>

namespace unet::cuda::matmul_detail {
namespace {

constexpr int kBN = 128, kBK = 64, kStages = 5;
constexpr int kRowBytes = kBK * 2;  // one k tile row: 128 bytes, the swizzle span

template <int CONSUMERS>
struct Sm90Config {
  static constexpr int kBM = 64 * CONSUMERS;
  static constexpr int kThreads = 128 * (CONSUMERS + 1);
  static constexpr int kABytes = kBM * kRowBytes, kBBytes = kBN * kRowBytes;
  static constexpr int kStageBytes = kABytes + kBBytes;  // a multiple of 1024: tiles stay aligned
  static constexpr size_t kSmemBytes = 1024 + size_t(kStages) * kStageBytes + 2 * kStages * 8;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// Box (k0.., row0.., matrix p) of a 3-d tensor map into shared dst; completes on bar.
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap* map, int k0, int row0, int p,
                                         uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(k0), "r"(row0), "r"(p), "r"(bar)
      : "memory");
}

// Shared-memory matrix descriptor of a K-major tile with 128-byte swizzle: rows of 128
// bytes, 8-row groups 1024 bytes apart (stride byte offset), leading byte offset unused
// (1), layout type 1 (SWIZZLE_128B). The tile base is 1024-byte aligned; a k16 step
// within the row adds 32 bytes to the start address.
__device__ __forceinline__ uint64_t sw128_descriptor(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) |
         (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator accesses across the asynchronous wgmma.
__device__ __forceinline__ void fence_registers(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define UNET_WGMMA_M64N128K16(TYPE)                                                          \
  asm volatile(                                                                              \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                           \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " {"                      \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                 \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "       \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "       \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"         \
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"                                                     \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "l"(desc_a), "l"(desc_b), "r"(1))

// d += A B^T for one k16 step: A 64x16 and B 128x16, both K-major in shared memory.
template <typename T>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  if constexpr (std::is_same_v<T, __half>)
    UNET_WGMMA_M64N128K16("f16");
  else
    UNET_WGMMA_M64N128K16("bf16");
}
#undef UNET_WGMMA_M64N128K16

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <typename T, int CONSUMERS>
__global__ void __launch_bounds__(128 * (CONSUMERS + 1), 1)
    matmul_sm90_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                       int64_t M, int64_t N, int64_t K, bool a_batched, bool b_batched, Plan plan,
                       Sink sink, int64_t z0) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using C = Sm90Config<CONSUMERS>;
  extern __shared__ uint8_t smem_raw[];
  // 128-byte swizzled tiles must start on 1024-byte boundaries.
  uint8_t* smem = smem_raw + ((1024 - smem_addr(smem_raw) % 1024) % 1024);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + kStages * C::kStageBytes);
  const uint32_t tiles = smem_addr(smem);
  const uint32_t full = smem_addr(bars), empty = smem_addr(bars + kStages);
  auto a_tile = [&](int s) { return tiles + s * C::kStageBytes; };
  auto b_tile = [&](int s) { return tiles + s * C::kStageBytes + C::kABytes; };

  const int wg = threadIdx.x / 128, t128 = threadIdx.x % 128;
  const int64_t m0 = int64_t(blockIdx.x) * C::kBM, n0 = int64_t(blockIdx.y) * kBN;
  const BatchSplit bs = batch_split(z0 + blockIdx.z, plan, K);
  const int64_t k_tiles = bs.k_end > bs.k_begin ? ceil_div(bs.k_end - bs.k_begin, kBK) : 0;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full + 8 * s, 1);
      mbar_init(empty + 8 * s, 128 * CONSUMERS);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");  // visible to the copy engine
  }
  __syncthreads();

  if (wg == 0) {
    if (t128 == 0) {
      const int pa = a_batched ? static_cast<int>(bs.p) : 0, pb = b_batched ? static_cast<int>(bs.p) : 0;
      for (int64_t i = 0; i < k_tiles; ++i) {
        const int s = static_cast<int>(i % kStages);
        const int64_t round = i / kStages;
        if (round > 0) mbar_wait(empty + 8 * s, static_cast<uint32_t>((round - 1) & 1));
        mbar_arrive_expect_tx(full + 8 * s, C::kStageBytes);
        const int k0 = static_cast<int>(bs.k_begin + i * kBK);
        tma_load(a_tile(s), &map_a, k0, static_cast<int>(m0), pa, full + 8 * s);
        tma_load(b_tile(s), &map_b, k0, static_cast<int>(n0), pb, full + 8 * s);
      }
    }
    return;
  }

  const int consumer = wg - 1;
  float d[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) d[i] = 0.0f;
  for (int64_t i = 0; i < k_tiles; ++i) {
    const int s = static_cast<int>(i % kStages);
    mbar_wait(full + 8 * s, static_cast<uint32_t>((i / kStages) & 1));
    __syncwarp();  // lanes may leave the polling loop apart; the .aligned wgmma needs them together
    const uint64_t desc_a = sw128_descriptor(a_tile(s) + consumer * 64 * kRowBytes);
    const uint64_t desc_b = sw128_descriptor(b_tile(s));
    fence_registers(d);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk)
      wgmma_m64n128k16<T>(d, desc_a + 2 * kk, desc_b + 2 * kk);  // +32 bytes, in 16-byte units
    wgmma_commit();
    wgmma_wait<1>();  // tile i - 1's group has retired: its stage may be refilled
    fence_registers(d);
    if (i > 0) mbar_arrive(empty + 8 * static_cast<int>((i - 1) % kStages));
  }
  wgmma_wait<0>();
  fence_registers(d);

  // m64nNk16 accumulators: warp w of the warpgroup holds rows 16w + g and 16w + g + 8;
  // d[4j + e] is column 8j + 2t + e % 2 of row 16w + g + 8 (e / 2).
  const int w = t128 / 32, lane = t128 % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = m0 + consumer * 64 + w * 16 + g + (e / 2) * 8;
      const int64_t col = n0 + j * 8 + 2 * t + e % 2;
      if (row < M && col < N) sink(bs.split, bs.p, row, col, d[4 * j + e]);
    }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      return PFN_cuTensorMapEncodeTiled_v12000(nullptr);
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// A 3-d map over `batch` row-major [rows, K] matrices (stride 0 or batch 1: one matrix),
// boxes of box_rows x 64 elements, 128-byte swizzle, zeros outside. False if the driver
// refuses it.
bool encode(CUtensorMap* map, const MatmulArgs& a, const void* ptr, int64_t rows, int64_t ld, int64_t stride,
            int box_rows) {
  const auto encode_fn = encode_tiled();
  if (!encode_fn) return false;
  const bool batched = a.batch > 1 && stride != 0;
  const cuuint64_t dims[3] = {cuuint64_t(a.K), cuuint64_t(rows), cuuint64_t(batched ? a.batch : 1)};
  const cuuint64_t strides[2] = {cuuint64_t(ld) * 2, cuuint64_t(batched ? stride : ld * rows) * 2};
  const cuuint32_t box[3] = {cuuint32_t(kBK), cuuint32_t(box_rows), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUtensorMapDataType type =
      a.ab_dtype == DType::Float16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  return encode_fn(map, type, 3, const_cast<void*>(ptr), dims, strides, box, element_strides,
                   CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                   CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <typename T, int CONSUMERS>
bool launch_typed(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  using C = Sm90Config<CONSUMERS>;
  // TMA coordinates are 32-bit; grid.y is at most 65535.
  if (a.M > INT32_MAX || a.N > INT32_MAX || a.K > INT32_MAX || a.batch > INT32_MAX ||
      ceil_div(a.N, kBN) > 65535)
    return false;
  CUtensorMap map_a, map_b;
  if (!encode(&map_a, a, a.a, a.M, a.lda, a.stride_a, C::kBM) ||
      !encode(&map_b, a, a.b, a.N, a.ldb, a.stride_b, kBN))
    return false;
  auto kernel = matmul_sm90_kernel<T, CONSUMERS>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(C::kSmemBytes)),
        "sm90 shared memory size");
  const bool a_batched = a.batch > 1 && a.stride_a != 0, b_batched = a.batch > 1 && a.stride_b != 0;
  const int64_t zs = a.batch * plan.splits;
  for (int64_t z0 = 0; z0 < zs; z0 += 65535) {
    const dim3 grid(static_cast<unsigned>(ceil_div(a.M, C::kBM)), static_cast<unsigned>(ceil_div(a.N, kBN)),
                    static_cast<unsigned>(std::min<int64_t>(zs - z0, 65535)));
    kernel<<<grid, C::kThreads, C::kSmemBytes, stream>>>(map_a, map_b, a.M, a.N, a.K, a_batched, b_batched,
                                                         plan, sink, z0);
    check(cudaGetLastError(), "sm90 kernel launch");
  }
  return true;
}

template <typename T>
bool launch_tile(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  static_assert(kSm90Tiles[0].bm == Sm90Config<2>::kBM && kSm90Tiles[1].bm == Sm90Config<1>::kBM &&
                    kSm90Tiles[0].bn == kBN && kSm90Tiles[1].bn == kBN && kSm90Tiles[0].bk == kBK &&
                    kSm90Tiles[1].bk == kBK,
                "kSm90Tiles must describe the tiles launched here");
  return plan.tile == 0 ? launch_typed<T, 2>(a, plan, sink, stream) : launch_typed<T, 1>(a, plan, sink, stream);
}

}  // namespace

bool sm90_compiled() {
  // All four instantiations come from one compilation of this file: one speaks for all.
  // Asked once, with a 9.x device current (the callers check the device first).
  static const bool compiled = [] {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, matmul_sm90_kernel<__nv_bfloat16, 2>) == cudaSuccess &&
           attr.binaryVersion == 90 && attr.ptxVersion >= 90;
  }();
  return compiled;
}

bool sm90_takes(const MatmulArgs& a) { return rows_16b_aligned(a) && !a.trans_a && a.trans_b && a.K > 0; }

bool launch_sm90(const MatmulArgs& a, const Plan& plan, const Sink& sink, cudaStream_t stream) {
  if (a.ab_dtype == DType::Float16) return launch_tile<__half>(a, plan, sink, stream);
  return launch_tile<__nv_bfloat16>(a, plan, sink, stream);
}

}  // namespace unet::cuda::matmul_detail
