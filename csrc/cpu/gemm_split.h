// How the blocked GEMMs (gemm.cpp, matmul_bf16.cpp) share C among their threads.
#pragma once

#include <algorithm>
#include <cstdint>

namespace unet::cpu {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Row blocks, a multiple of nt of them, each block's columns cut into n_splits parts when
// there are fewer blocks than threads. The blocks share out the MR-row tiles evenly (block
// ib: tiles [tiles * ib / n, tiles * (ib + 1) / n)), so that the threads' shares differ by
// at most a tile per block. A skinny C (M within one block of mc rows, as in a recurrent
// step's h W^T with M = batch) is cut by columns only, so that each thread streams its own
// part of B instead of all of it.
struct ThreadSplit {
  int64_t n_iblocks, n_splits;
  int64_t tiles, mc;  // MR-row tiles in all; rows of the tallest block
  int64_t row(int64_t ib, int MR) const { return tiles * ib / n_iblocks * MR; }
};

// mc: the rows of a block of A kept in L2; nc: the columns of a block of B.
inline ThreadSplit split_work(int64_t M, int64_t N, int nt, int MR, int NR, int64_t mc,
                              int64_t nc) {
  const int64_t tiles = ceil_div(M, MR);
  if (M <= mc && ceil_div(std::min(N, nc), NR) >= 2 * nt) return {1, nt, tiles, tiles * MR};
  const int64_t n_iblocks = std::min(round_up(ceil_div(M, mc), nt), tiles);
  return {n_iblocks, n_iblocks < nt ? ceil_div(nt, n_iblocks) : 1, tiles,
          ceil_div(tiles, n_iblocks) * MR};
}

}  // namespace unet::cpu
