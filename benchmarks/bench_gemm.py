"""Mixed-precision GEMM: unet._C.matmul against its peers, on DeepBench's GEMM shapes.

Shapes: benchmarks/deepbench/gemm_train.csv and gemm_inference_server.csv (Baidu
DeepBench, Apache-2.0) and squares 1024..8192. On the CPU the default is a subset that
runs in a couple of minutes (every 10th DeepBench row of at most 4 GFLOP, squares 1024
and 2048); --full runs them all (the default on a GPU).

Peers, each timed in the same run (median of --repeats calls after --warmup calls;
"ratio" is unet's time over the peer's, below 1: unet is faster):
  CPU   numpy (its BLAS; numpy has no bfloat16 GEMM, so float32 is its entry for the 16-bit
        rows) and, when importable, PyTorch (torch.matmul in the same dtype)
  CUDA  cuBLAS through CuPy (cupy.matmul) and, when importable, PyTorch on the GPU
Every product writes float32 (C = A B, no epilogue) for float32 inputs and the input dtype
for 16-bit ones, into preallocated arrays.

    python benchmarks/bench_gemm.py [--device cpu|cuda] [--dtype float32|bfloat16|float16]
                                    [--full] [--json PATH]
"""
import csv
import os

import ml_dtypes
import numpy as np
from harness import cuda_median_time, machine_info, make_parser, median_time, parse_args, peer_cells, peer_header, \
    write_report

from unet import _C

HERE = os.path.dirname(os.path.abspath(__file__))
TABLES = ["gemm_train.csv", "gemm_inference_server.csv"]
SQUARES = [1024, 2048, 4096, 8192]
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}
CPU_SUBSET_MAX_FLOP = 4e9


def deepbench_shapes(full):
    """(M, N, K, trans_a, trans_b, source) in unet's row-major terms.

    DeepBench's GEMMs are column-major cuBLAS calls C[m,n] = op(A)[m,k] op(B)[k,n]; in row
    major that is C^T = op(B)^T op(A)^T: M = n, N = m, a = B (B's flag), b = A (A's flag).
    """
    shapes = []
    for table in TABLES:
        with open(os.path.join(HERE, "deepbench", table)) as f:
            for row_no, row in enumerate(csv.DictReader(f)):
                m, n, k = int(row["M"]), int(row["N"]), int(row["K"])
                if not full and (row_no % 10 or 2.0 * m * n * k > CPU_SUBSET_MAX_FLOP):
                    continue
                source = f"{table} row {row_no + 1}: {m},{n},{k},{row['A_transpose']},{row['B_transpose']}" \
                         f" {row['application']}".rstrip()
                shapes.append((n, m, k, row["B_transpose"] == "T", row["A_transpose"] == "T", source))
    for s in SQUARES if full else SQUARES[:2]:
        shapes.append((s, s, s, False, False, "square"))
    return shapes


def operands(M, N, K, trans_a, trans_b, rng):
    """float32 a, b as stored (a [K, M] when trans_a, b [N, K] when trans_b)."""
    a = rng.standard_normal((K, M) if trans_a else (M, K), np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N), np.float32)
    return a, b


def op(x, trans):
    return x.T if trans else x


def cpu_candidates(M, N, K, trans_a, trans_b, dtype, rng):
    a32, b32 = operands(M, N, K, trans_a, trans_b, rng)
    a, b = a32.astype(dtype), b32.astype(dtype)
    c = np.empty((M, N), dtype)
    c32 = np.empty((M, N), np.float32)
    fns = {
        "unet": lambda: _C.matmul(a, b, c, trans_a=trans_a, trans_b=trans_b),
        "numpy": lambda: np.matmul(op(a32, trans_a), op(b32, trans_b), out=c32),
    }
    try:
        import torch

        tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype.name]
        ta, tb = (torch.from_numpy(x).to(tdtype) for x in (a32, b32))
        tc = torch.empty((M, N), dtype=tdtype)
        fns["torch"] = lambda: torch.matmul(op(ta, trans_a), op(tb, trans_b), out=tc)
    except ImportError:
        pass
    return fns


def cuda_candidates(M, N, K, trans_a, trans_b, dtype, rng):
    import cupy as cp

    a32, b32 = operands(M, N, K, trans_a, trans_b, rng)
    a, b = cp.asarray(a32.astype(dtype)), cp.asarray(b32.astype(dtype))
    c, c_peer = cp.empty((M, N), dtype), cp.empty((M, N), dtype)
    fns = {
        "unet": lambda: _C.matmul(a, b, c, trans_a=trans_a, trans_b=trans_b,
                                  stream=cp.cuda.get_current_stream().ptr),
        "cublas": lambda: cp.matmul(op(a, trans_a), op(b, trans_b), out=c_peer),
    }
    try:
        import torch

        tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype.name]
        ta, tb = (torch.from_numpy(x).to("cuda", tdtype) for x in (a32, b32))
        tc = torch.empty((M, N), dtype=tdtype, device="cuda")
        fns["torch"] = lambda: torch.matmul(op(ta, trans_a), op(tb, trans_b), out=tc)
    except (ImportError, AssertionError, RuntimeError):  # no torch, or one without CUDA
        pass
    return fns, cp


def cupy_has_bfloat16():
    import cupy as cp

    try:
        cp.zeros(1, ml_dtypes.bfloat16)
        return True
    except (TypeError, ValueError, NotImplementedError):
        return False


def run(device, dtypes, repeats, warmup, shapes):
    rng = np.random.default_rng(0)
    results = []
    for dtype in dtypes:
        for M, N, K, trans_a, trans_b, source in shapes:
            if device == "cuda":
                fns, cp = cuda_candidates(M, N, K, trans_a, trans_b, dtype, rng)
                times = {name: cuda_median_time(cp, fn, repeats, warmup) for name, fn in fns.items()}
            else:
                fns = cpu_candidates(M, N, K, trans_a, trans_b, dtype, rng)
                times = {name: median_time(fn, repeats, warmup) for name, fn in fns.items()}
            flops = 2.0 * M * N * K
            results.append({
                "dtype": dtype.name, "M": M, "N": N, "K": K, "trans_a": trans_a, "trans_b": trans_b,
                "source": source,
                "time_s": times,
                "tflops": {name: flops / t / 1e12 for name, t in times.items()},
                "ratio": {name: times["unet"] / t for name, t in times.items() if name != "unet"},
            })
            print_row(results[-1], len(results) == 1)
    return results


def print_row(r, header):
    peers = [name for name in r["time_s"] if name != "unet"]
    if header:
        print(f"{'dtype':>8} {'M x N x K':>19} {'op':>3} {'unet ms':>10} {'TFLOP/s':>8}" + peer_header(peers))
    flags = ("T" if r["trans_a"] else "N") + ("T" if r["trans_b"] else "N")
    print(f"{r['dtype']:>8} {r['M']:>6}x{r['N']:>6}x{r['K']:>5} {flags:>3} {r['time_s']['unet'] * 1e3:10.3f} "
          f"{r['tflops']['unet']:8.3f}" + peer_cells(r, peers, 3), flush=True)


def main(argv=None):
    parser = make_parser(__doc__, repeats=5, warmup=1, dtypes=tuple(DTYPES),
                         dtype_help="default: float32 and bfloat16")
    parser.set_defaults(dtype=None)
    parser.add_argument("--full", action="store_true",
                        help="every DeepBench row and square (the default on a GPU)")
    args = parse_args(parser, argv)
    dtypes = [DTYPES[args.dtype]] if args.dtype else [DTYPES["float32"], DTYPES["bfloat16"]]
    full = args.full or args.device == "cuda"
    if args.device == "cuda" and DTYPES["bfloat16"] in dtypes and not cupy_has_bfloat16():
        print("skipping bfloat16: this CuPy has no ml_dtypes.bfloat16 arrays (CuPy >= 14 has)")
        dtypes.remove(DTYPES["bfloat16"])

    results = run(args.device, dtypes, args.repeats, args.warmup, deepbench_shapes(full))
    print("ratio = unet time / peer time (below 1: unet faster); numpy's entry for 16-bit rows is its float32 GEMM")
    if args.json:
        write_report(args.json, "gemm", {"kernel": "matmul (C = op(A) op(B), float32 accumulation)"},
                     {"device": args.device, "dtypes": [d.name for d in dtypes], "full": full,
                      "repeats": args.repeats, "warmup": args.warmup},
                     machine_info(args.device), results)


if __name__ == "__main__":
    main()
