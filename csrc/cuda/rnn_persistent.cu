// The persistent path of the CUDA recurrent layers (after Diamos et al., "Persistent RNNs",
// ICML 2016): one kernel runs every step of the recurrence, each block keeping its share of
// the recurrent weights in shared memory for the whole sequence, instead of the per-step
// path's two or three launches per step that re-read W_hh from memory every time.
//
// Forward: block k owns hidden units J = [k*U, k*U + U) and holds W_hh's rows of those
// units for every gate (G*U rows of length H). Per step it stages h_{t-1} [B,H] from global
// memory (L2) through shared memory, computes h_{t-1} W_hh^T for its rows, runs the cell for
// its units (the same cell functions as the per-step path: cuda/rnn_kernels.cuh), keeps its
// units' h and c on chip, writes y, the workspace and its slice of h_t, then the grid meets
// at a barrier before anyone reads h_t.
// Backward: block k owns the same units and holds W_hh's columns J (U rows of length G*H of
// W_hh^T). Per step it runs the cell backward for its units, writes d pre-activations, meets
// the grid at a barrier, stages dgh[t] [B,G*H] and computes dh_{t-1}[:, J] = dgh[t] W_hh[:, J]
// plus the direct part. The weight gradients follow as GEMMs in cuda/rnn.cu.
//
// The grid barrier is cooperative groups' grid.sync() under cudaLaunchCooperativeKernel:
// the runtime refuses the launch unless every block can be resident at once (a hand-made
// barrier over a counter would deadlock silently if another kernel or an MPS limit kept a
// block from being scheduled), and grid.sync() carries the memory fences that make each
// block's writes visible to the others. Data written by other blocks during the kernel is
// read with ld.global.cg (L2, never a possibly stale L1 line).
//
// Matrix-vector products: a warp computes a tile of 4 rows x BB batch rows; its lanes split
// k in 16-byte vectors, so shared-memory reads are contiguous and conflict-free, and the
// 4*BB partial sums are combined by a butterfly reduce-scatter over the warp (31 shuffles
// for 32 sums). When few tiles exist the k range is also split across warps (KS parts), and
// a long k range is staged in chunks of KC. Every partial sum is added in a fixed order:
// results are run-to-run identical.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "rnn_kernels.cuh"
#include "unet/rnn.h"

namespace unet::cuda::rnn {
namespace {

namespace cg = cooperative_groups;

constexpr int kRB = 4;            // rows per warp tile
constexpr int kMaxBatch = 32;     // the persistent path's batch limit
constexpr int kThreads = 512;     // one block per SM: 16 warps to hide shared-memory latency

__device__ __forceinline__ float fma_(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_(double a, double b, double c) { return fma(a, b, c); }

// 16-byte vectors from shared memory.
__device__ __forceinline__ void load16(const float* p, float (&v)[4]) {
  const float4 t = *reinterpret_cast<const float4*>(p);
  v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
}
__device__ __forceinline__ void load16(const double* p, double (&v)[2]) {
  const double2 t = *reinterpret_cast<const double2*>(p);
  v[0] = t.x, v[1] = t.y;
}

// One reduce-scatter stage over lanes differing in bit MASK: lanes with the bit set keep the
// upper N/2 of their N values, the others the lower half, each adding its partner's copy.
template <int N, int MASK, typename T, int NV>
__device__ __forceinline__ void reduce_scatter_stage(T (&v)[NV], int lane) {
  if constexpr (N > 1) {
    constexpr int kHalf = N / 2;
    const bool upper = (lane & MASK) != 0;
#pragma unroll
    for (int i = 0; i < kHalf; ++i) {
      const T send = upper ? v[i] : v[i + kHalf];
      const T keep = upper ? v[i + kHalf] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, MASK);
    }
    reduce_scatter_stage<kHalf, MASK / 2>(v, lane);
  }
}

// Sums each of the NV values over the 32 lanes; lane l returns the total of value
// l / (32/NV). First log2(NV) reduce-scatter stages (masks 16, 8, ...), then plain
// butterfly stages over the remaining lane bits. A fixed data flow, so deterministic.
// (Stages are template recursion: loops with bounds derived from an outer loop were not
// fully unrolled by nvcc 13 and put v in local memory.)
template <int NV, typename T>
__device__ __forceinline__ T warp_reduce_scatter(T (&v)[NV]) {
  static_assert(NV >= 1 && NV <= 32 && (NV & (NV - 1)) == 0, "NV: a power of two up to 32");
  const int lane = threadIdx.x & 31;
  reduce_scatter_stage<NV, 16>(v, lane);
  T s = v[0];
#pragma unroll
  for (int mask = 16 / NV; mask >= 1; mask >>= 1) s += __shfl_xor_sync(0xffffffffu, s, mask);
  return s;
}

// Shape of one block's product, fixed for the kernel.
struct MatvecShape {
  int rows_pad;  // rows held (multiple of kRB; rows past the real ones are zeros)
  int Kp;        // row stride of the held matrix (K rounded up to a 16-byte vector)
  int K;         // reduction length
  int B, Bpad;   // batch rows, and rounded up to BB
  int KC;        // staged chunk of k (multiple of the vector width)
  int KS;        // warps sharing one tile's k range
};

// Z[r*Bpad + b] = sum_k W[r*Kp + k] * src[b*ldv + k] for every held row r and b < Bpad
// (rows b >= B read as zeros). src was written by other blocks: read through L2.
// Ends with a barrier: Z is complete for the whole block on return.
template <typename T, int BB>
__device__ void block_matvec(const MatvecShape& m, const T* W, const T* __restrict__ src,
                             int64_t ldv, T* Vs, T* Zp, T* Z) {
  constexpr int VEC = 16 / int(sizeof(T)), NV = kRB * BB;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int lane = tid & 31, warp = tid >> 5, nwarps = nthreads >> 5;
  const int b_tiles = m.Bpad / BB, tiles = (m.rows_pad / kRB) * b_tiles, items = tiles * m.KS;
  const int zsize = m.rows_pad * m.Bpad;
  for (int k0 = 0; k0 < m.K; k0 += m.KC) {
    const int kc = min(m.KC, m.K - k0);
    const int kcp = (kc + VEC - 1) / VEC * VEC;
    for (int e = tid; e < m.Bpad * kcp; e += nthreads) {
      const int b = e / kcp, k = e % kcp;
      const bool in = src != nullptr && b < m.B && k < kc;
      Vs[b * m.KC + k] = in ? __ldcg(src + b * ldv + k0 + k) : T(0);
    }
    __syncthreads();
    const int nvec = kcp / VEC, per = (nvec + m.KS - 1) / m.KS;
    for (int item = warp; item < items; item += nwarps) {
      const int ks = item % m.KS, tile = item / m.KS;
      const int rt = tile / b_tiles, bt = tile % b_tiles;
      T acc[NV];
#pragma unroll
      for (int q = 0; q < NV; ++q) acc[q] = T(0);
      const int v1 = min(nvec, (ks + 1) * per);
      for (int v = ks * per + lane; v < v1; v += 32) {
        T w[kRB][VEC], x[BB][VEC];
#pragma unroll
        for (int i = 0; i < kRB; ++i) load16(W + (rt * kRB + i) * m.Kp + k0 + v * VEC, w[i]);
#pragma unroll
        for (int j = 0; j < BB; ++j) load16(Vs + (bt * BB + j) * m.KC + v * VEC, x[j]);
#pragma unroll
        for (int i = 0; i < kRB; ++i)
#pragma unroll
          for (int j = 0; j < BB; ++j)
#pragma unroll
            for (int c = 0; c < VEC; ++c) acc[i * BB + j] = fma_(w[i][c], x[j][c], acc[i * BB + j]);
      }
      const T sum = warp_reduce_scatter<NV>(acc);
      constexpr int kLanesPerValue = 32 / NV;
      if (lane % kLanesPerValue == 0) {
        const int q = lane / kLanesPerValue, i = q / BB, j = q % BB;
        Zp[ks * zsize + (rt * kRB + i) * m.Bpad + bt * BB + j] = sum;
      }
    }
    __syncthreads();
    for (int e = tid; e < zsize; e += nthreads) {
      T s = k0 == 0 ? T(0) : Z[e];
      for (int ks = 0; ks < m.KS; ++ks) s += Zp[ks * zsize + e];
      Z[e] = s;
    }
    // No barrier needed here: the next chunk writes Vs (last read before the barrier above)
    // and writes Zp only after its staging barrier, which every thread reaches after this.
  }
  __syncthreads();
}

// Shared-memory layout, in elements of T, computed the same way on host and device.
struct SmemLayout {
  int64_t w, v, zp, z, state, total;
  SmemLayout() = default;
  __host__ __device__ SmemLayout(const MatvecShape& m, int U, int B) {
    w = 0;
    v = w + int64_t(m.rows_pad) * m.Kp;  // multiple of the vector width: 16-byte aligned
    zp = v + int64_t(m.Bpad) * m.KC;
    z = zp + int64_t(m.KS) * m.rows_pad * m.Bpad;
    state = z + int64_t(m.rows_pad) * m.Bpad;
    total = state + 3 * int64_t(U) * B;
  }
};

template <typename T>
__device__ T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char unet_rnn_smem[];
  return reinterpret_cast<T*>(unet_rnn_smem);
}

template <typename T>
struct PersistentForward {
  RnnMode mode;
  int64_t T_, B, H;  // P == H
  bool reverse, relu;
  const int64_t* lengths;
  const T* w_hh;
  const T* b_hh;
  const T* h0;
  const T* c0;
  T* gates;  // workspace regions (cuda/rnn_kernels.cuh)
  T* aux;
  T* tanhc;
  T* hprev;
  T* y;
  T* h_n;
  T* c_n;
  int U;  // hidden units per block
  MatvecShape m;
};

template <typename T, int BB>
__global__ void __launch_bounds__(kThreads, 1)
    rnn_persistent_forward_kernel(PersistentForward<T> p) {
  cg::grid_group grid = cg::this_grid();
  const SmemLayout sl(p.m, p.U, int(p.B));
  T* smem = dynamic_smem<T>();
  T* W = smem + sl.w;
  T* hs = smem + sl.state;  // [U][B]: this block's units of the state
  T* cs = hs + p.U * p.B;   // [U][B]: LSTM cell
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int64_t H = p.H, B = p.B, G = gate_count(p.mode), GH = G * H;
  const int U = p.U;
  const int64_t j0 = int64_t(blockIdx.x) * U;
  const int uc = int(H - j0 < U ? H - j0 : U);
  const Layout L(p.mode, p.T_, B, H, H, p.reverse);

  // W_hh rows of this block's units, gate-major: held row q*U + u is W_hh row q*H + j0 + u.
  for (int64_t e = tid; e < int64_t(p.m.rows_pad) * p.m.Kp; e += nthreads) {
    const int r = int(e / p.m.Kp), k = int(e % p.m.Kp), q = r / U, u = r % U;
    W[e] = (q < G && u < uc && k < H) ? p.w_hh[(q * H + j0 + u) * H + k] : T(0);
  }
  const int64_t t0 = L.time(0);
  for (int e = tid; e < uc * B; e += nthreads) {
    const int b = e / uc, u = e % uc;
    const int64_t j = j0 + u;
    const T h = p.h0 ? p.h0[b * H + j] : T(0);
    hs[u * B + b] = h;
    cs[u * B + b] = p.c0 ? p.c0[b * H + j] : T(0);
    p.hprev[(t0 * B + b) * H + j] = h;  // the first step's hprev slot holds h0
  }
  // (the first matvec's staging barrier orders these before any use)

  for (int64_t s = 0; s < p.T_; ++s) {
    const int64_t t = L.time(s);
    const bool last = s + 1 == p.T_;
    // Step 0 reads h0 itself: its copy in the workspace is not yet visible to other blocks.
    block_matvec<T, BB>(p.m, W, s == 0 ? p.h0 : p.hprev + t * B * H, H, smem + sl.v, smem + sl.zp,
                        smem + sl.z);
    const T* Z = smem + sl.z;
    for (int e = tid; e < uc * B; e += nthreads) {
      const int b = e / uc, u = e % uc;
      const int64_t j = j0 + u, eo = (t * B + b) * H + j;  // [T,B,H] (and [T,B,P]) index
      const bool valid = p.lengths == nullptr || t < p.lengths[b];
      T* g = p.gates + (t * B + b) * GH + j;
      auto rec = [&](int q) {  // (h W_hh^T + b_hh) for gate q of unit j
        const T z = Z[(q * U + u) * p.m.Bpad + b];
        return p.b_hh ? z + p.b_hh[q * H + j] : z;
      };
      const T h_prev = hs[u * B + b];
      T h = h_prev;
      if (p.mode == RnnMode::LSTM) {
        const T cp = cs[u * B + b];
        T c = cp, tc = T(0), gate[4] = {T(0), T(0), T(0), T(0)};
        if (valid) {
          const T pre[4] = {g[0] + rec(0), g[H] + rec(1), g[2 * H] + rec(2), g[3 * H] + rec(3)};
          lstm_cell_forward(pre, cp, gate, c, tc);
          h = gate[3] * tc;
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) g[q * H] = gate[q];
        p.aux[eo] = c;
        p.tanhc[eo] = tc;
        cs[u * B + b] = c;
        if (last && p.c_n) p.c_n[b * H + j] = c;
      } else if (p.mode == RnnMode::GRU) {
        const T hn = rec(2);
        T gate[3] = {T(0), T(0), T(0)};
        if (valid) h = gru_cell_forward(g[0] + rec(0), g[H] + rec(1), g[2 * H], hn, h_prev, gate);
#pragma unroll
        for (int q = 0; q < 3; ++q) g[q * H] = gate[q];
        p.aux[eo] = hn;
      } else {
        const T a = valid ? rnn_cell_forward(p.relu, g[0] + rec(0)) : T(0);
        g[0] = a;
        if (valid) h = a;
      }
      hs[u * B + b] = h;
      p.y[eo] = valid ? h : T(0);
      if (last)
        p.h_n[b * H + j] = h;
      else
        p.hprev[(L.time(s + 1) * B + b) * H + j] = h;
    }
    if (!last) grid.sync();  // h_t complete everywhere before the next step stages it
  }
}

template <typename T>
struct PersistentBackward {
  RnnMode mode;
  int64_t T_, B, H;
  bool reverse, relu;
  const int64_t* lengths;
  const T* w_hh;
  const T* c0;
  const T* gates;
  const T* aux;
  const T* tanhc;
  const T* hprev;
  const T* grad_y;
  const T* grad_h_n;
  const T* grad_c_n;
  T* dgi;
  T* dgh;  // == dgi unless GRU
  T* grad_h0;
  T* grad_c0;
  int U;
  MatvecShape m;
};

template <typename T, int BB>
__global__ void __launch_bounds__(kThreads, 1)
    rnn_persistent_backward_kernel(PersistentBackward<T> p) {
  cg::grid_group grid = cg::this_grid();
  const SmemLayout sl(p.m, p.U, int(p.B));
  T* smem = dynamic_smem<T>();
  T* W = smem + sl.w;
  T* carry = smem + sl.state;    // [U][B]: dL/d(state), this block's units
  T* dcs = carry + p.U * p.B;    // [U][B]: dL/d(cell)
  T* direct = dcs + p.U * p.B;   // [U][B]: the direct part of dL/d(previous state)
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int64_t H = p.H, B = p.B, G = gate_count(p.mode), GH = G * H;
  const int U = p.U;
  const int64_t j0 = int64_t(blockIdx.x) * U;
  const int uc = int(H - j0 < U ? H - j0 : U);
  const Layout L(p.mode, p.T_, B, H, H, p.reverse);

  // W_hh^T rows of this block's units: held row u is W_hh column j0 + u (length G*H).
  for (int64_t e = tid; e < int64_t(p.m.rows_pad) * p.m.Kp; e += nthreads) {
    const int u = int(e / p.m.Kp), r = int(e % p.m.Kp);
    W[e] = (u < uc && r < GH) ? p.w_hh[r * H + j0 + u] : T(0);
  }
  for (int e = tid; e < uc * B; e += nthreads) {
    const int b = e / uc, u = e % uc;
    carry[u * B + b] = p.grad_h_n ? p.grad_h_n[b * H + j0 + u] : T(0);
    dcs[u * B + b] = p.grad_c_n ? p.grad_c_n[b * H + j0 + u] : T(0);
  }

  for (int64_t s = p.T_ - 1; s >= 0; --s) {
    const int64_t t = L.time(s);
    for (int e = tid; e < uc * B; e += nthreads) {
      const int b = e / uc, u = e % uc;
      const int64_t j = j0 + u, eo = (t * B + b) * H + j, row = (t * B + b) * GH + j;
      const bool valid = p.lengths == nullptr || t < p.lengths[b];
      const T* g = p.gates + row;
      T* di = p.dgi + row;
      T* dr = p.dgh + row;
      if (!valid) {  // the state passes through untouched
        for (int q = 0; q < G; ++q) di[q * H] = dr[q * H] = T(0);
        direct[u * B + b] = carry[u * B + b];
        continue;
      }
      const T dh = carry[u * B + b] + (p.grad_y ? p.grad_y[eo] : T(0));
      if (p.mode == RnnMode::LSTM) {
        const T cp = s > 0 ? p.aux[(L.time(s - 1) * B + b) * H + j]
                           : (p.c0 ? p.c0[b * H + j] : T(0));
        const T gate[4] = {g[0], g[H], g[2 * H], g[3 * H]};
        T dpre[4];
        lstm_cell_backward(gate, cp, p.tanhc[eo], dh, dcs[u * B + b], dpre);
#pragma unroll
        for (int q = 0; q < 4; ++q) di[q * H] = dpre[q];
        direct[u * B + b] = T(0);
      } else if (p.mode == RnnMode::GRU) {
        const T gate[3] = {g[0], g[H], g[2 * H]};
        T dgi[3], dgh[3];
        direct[u * B + b] = gru_cell_backward(gate, p.aux[eo], p.hprev[eo], dh, dgi, dgh);
#pragma unroll
        for (int q = 0; q < 3; ++q) {
          di[q * H] = dgi[q];
          dr[q * H] = dgh[q];
        }
      } else {
        di[0] = rnn_cell_backward(p.relu, g[0], dh);
        direct[u * B + b] = T(0);
      }
    }
    if (s == 0 && p.grad_h0 == nullptr) break;  // uniform over the grid
    grid.sync();  // dgh[t] complete everywhere
    block_matvec<T, BB>(p.m, W, p.dgh + t * B * GH, GH, smem + sl.v, smem + sl.zp, smem + sl.z);
    const T* Z = smem + sl.z;
    for (int e = tid; e < uc * B; e += nthreads) {
      const int b = e / uc, u = e % uc;
      carry[u * B + b] = Z[u * p.m.Bpad + b] + direct[u * B + b];
    }
  }
  for (int e = tid; e < uc * B; e += nthreads) {
    const int b = e / uc, u = e % uc;
    const int64_t j = j0 + u;
    if (p.grad_h0) p.grad_h0[b * H + j] = carry[u * B + b];
    if (p.mode == RnnMode::LSTM && p.grad_c0) p.grad_c0[b * H + j] = dcs[u * B + b];
  }
}

// ---- host: plan, fit, launch ----

struct Plan {
  int U = 0, nblk = 0, BB = 0;
  MatvecShape m{};
  size_t smem = 0;  // bytes
};

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Fills `plan` for a product with `rows_of_unit` held rows per hidden unit and reduction
// length K, or returns false with the reason in `why`.
template <typename T>
bool make_plan(RnnMode mode, int64_t B, int64_t H, int64_t P, bool forward, Plan* plan,
               std::string* why) {
  if (P != H) {
    *why = "the persistent path does not handle an LSTM with projection";
    return false;
  }
  if (B < 1 || B > kMaxBatch || H < 1) {
    *why = "the persistent path needs 1 <= batch <= " + std::to_string(kMaxBatch) + " (got " +
           std::to_string(B) + ")";
    return false;
  }
  int device = 0, coop = 0, sms = 0, optin = 0;
  const char* what = "rnn (CUDA): device attributes";
  check(cudaGetDevice(&device), what);
  check(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device), what);
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), what);
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), what);
  if (!coop || sms < 1) {
    *why = "the device does not support cooperative launches";
    return false;
  }
  const int64_t G = gate_count(mode), VEC = 16 / sizeof(T), NW = kThreads / 32;
  Plan p;
  p.U = int((H + sms - 1) / sms);
  p.nblk = int((H + p.U - 1) / p.U);
  p.BB = B == 1 ? 1 : B == 2 ? 2 : B <= 4 ? 4 : 8;
  MatvecShape& m = p.m;
  m.rows_pad = int(round_up(forward ? G * p.U : p.U, kRB));
  m.K = int(forward ? H : G * H);
  m.Kp = int(round_up(m.K, VEC));
  m.B = int(B);
  m.Bpad = int(round_up(B, p.BB));
  const int64_t tiles = (m.rows_pad / kRB) * (m.Bpad / p.BB);
  const int64_t ks_max = std::max<int64_t>(1, (NW + tiles - 1) / tiles);
  // Everything but the staged chunk, with room for ks_max k-splits.
  const int64_t fixed =
      int64_t(m.rows_pad) * m.Kp + (ks_max + 1) * m.rows_pad * m.Bpad + 3 * p.U * B;
  const int64_t avail = int64_t(optin) / int64_t(sizeof(T)) - fixed;
  const int64_t kc = std::min<int64_t>(m.Kp, avail / m.Bpad / VEC * VEC);
  if (kc < std::min<int64_t>(m.Kp, 32 * VEC)) {
    *why = "W_hh (" + std::to_string(G * H * H * sizeof(T)) + " bytes) and a batch of " +
           std::to_string(B) + " do not fit in " + std::to_string(p.nblk) + " blocks of " +
           std::to_string(optin) + " bytes of shared memory";
    return false;
  }
  m.KC = int(kc);
  m.KS = int(std::min<int64_t>(ks_max, std::max<int64_t>(1, kc / VEC / 32)));
  p.smem = size_t(SmemLayout(m, p.U, int(B)).total) * sizeof(T);
  *plan = p;
  return true;
}

// Launches `kernel` cooperatively after checking that the grid can be resident at once.
// False (nothing launched) when it cannot.
template <class Kernel, class Params>
bool launch_cooperative(Kernel kernel, const Plan& plan, Params params, cudaStream_t stream,
                        const char* what, std::string* why) {
  int device = 0, optin = 0, sms = 0, per_sm = 0;
  check(cudaGetDevice(&device), what);
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), what);
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), what);
  // Always the device's limit (not this call's size): concurrent callers set the same value.
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin), what);
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, plan.smem), what);
  if (int64_t(per_sm) * sms < plan.nblk) {
    *why = std::to_string(plan.nblk) + " blocks of " + std::to_string(plan.smem) +
           " bytes of shared memory cannot all be resident";
    return false;
  }
  void* args[] = {&params};
  const cudaError_t err = cudaLaunchCooperativeKernel(kernel, dim3(plan.nblk), dim3(kThreads), args,
                                                      plan.smem, stream);
  if (err == cudaErrorCooperativeLaunchTooLarge) {  // e.g. fewer SMs usable under MPS
    cudaGetLastError();
    *why = "the cooperative launch of " + std::to_string(plan.nblk) + " blocks was refused";
    return false;
  }
  check(err, what);
  check(cudaGetLastError(), what);
  return true;
}

}  // namespace

template <typename T>
bool persistent_forward(const RnnForwardArgs<T>& a, cudaStream_t stream, std::string* why) {
  Plan plan;
  if (a.steps < 1 || !make_plan<T>(a.mode, a.batch, a.hidden_size, a.proj_size, true, &plan, why))
    return false;
  const Layout L(a.mode, a.steps, a.batch, a.hidden_size, a.proj_size, a.reverse);
  T* ws = a.workspace;
  const PersistentForward<T> p{a.mode, L.T, L.B, L.H, a.reverse, a.mode == RnnMode::RNN_RELU,
                               a.lengths, a.w_hh, a.b_hh, a.h0, a.c0, ws + L.gates(), ws + L.aux(),
                               ws + L.tanhc(), ws + L.hprev(), a.y, a.h_n, a.c_n, plan.U, plan.m};
  const char* what = "rnn forward (CUDA): persistent kernel launch";
  switch (plan.BB) {
    case 1:
      return launch_cooperative(rnn_persistent_forward_kernel<T, 1>, plan, p, stream, what, why);
    case 2:
      return launch_cooperative(rnn_persistent_forward_kernel<T, 2>, plan, p, stream, what, why);
    case 4:
      return launch_cooperative(rnn_persistent_forward_kernel<T, 4>, plan, p, stream, what, why);
    default:
      return launch_cooperative(rnn_persistent_forward_kernel<T, 8>, plan, p, stream, what, why);
  }
}

template <typename T>
bool persistent_backward(const RnnBackwardArgs<T>& g, T* dgi, T* dgh, cudaStream_t stream,
                         std::string* why) {
  const RnnForwardArgs<T>& a = g.fwd;
  Plan plan;
  if (a.steps < 1 || !make_plan<T>(a.mode, a.batch, a.hidden_size, a.proj_size, false, &plan, why))
    return false;
  const Layout L(a.mode, a.steps, a.batch, a.hidden_size, a.proj_size, a.reverse);
  const T* ws = a.workspace;
  const PersistentBackward<T> p{a.mode, L.T, L.B, L.H, a.reverse, a.mode == RnnMode::RNN_RELU,
                                a.lengths, a.w_hh, a.c0, ws + L.gates(), ws + L.aux(),
                                ws + L.tanhc(), ws + L.hprev(), g.grad_y, g.grad_h_n, g.grad_c_n,
                                dgi, dgh, g.grad_h0, g.grad_c0, plan.U, plan.m};
  const char* what = "rnn backward (CUDA): persistent kernel launch";
  switch (plan.BB) {
    case 1:
      return launch_cooperative(rnn_persistent_backward_kernel<T, 1>, plan, p, stream, what, why);
    case 2:
      return launch_cooperative(rnn_persistent_backward_kernel<T, 2>, plan, p, stream, what, why);
    case 4:
      return launch_cooperative(rnn_persistent_backward_kernel<T, 4>, plan, p, stream, what, why);
    default:
      return launch_cooperative(rnn_persistent_backward_kernel<T, 8>, plan, p, stream, what, why);
  }
}

template bool persistent_forward<float>(const RnnForwardArgs<float>&, cudaStream_t, std::string*);
template bool persistent_forward<double>(const RnnForwardArgs<double>&, cudaStream_t, std::string*);
template bool persistent_backward<float>(const RnnBackwardArgs<float>&, float*, float*,
                                         cudaStream_t, std::string*);
template bool persistent_backward<double>(const RnnBackwardArgs<double>&, double*, double*,
                                          cudaStream_t, std::string*);

}  // namespace unet::cuda::rnn
