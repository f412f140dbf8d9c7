"""Fused linear layer (GEMM + bias + ReLU): unet._C.linear_forward against its peers.

CPU peers: numpy (its BLAS: x @ W.T, + b, ReLU, all into preallocated arrays) and, when
importable, PyTorch (F.linear + relu). CUDA peer (--device cuda, needs CuPy): cuBLAS
through CuPy's matmul, + b, ReLU. Each time is the median of --repeats calls after
--warmup calls; "ratio" is unet's time over the peer's (below 1: unet is faster).

    python benchmarks/bench_gemm.py [--device cpu|cuda] [--dtype float32] [--json PATH]
"""
import numpy as np
from harness import cuda_median_time, machine_info, make_parser, median_time, parse_args, peer_cells, peer_header, \
    write_report

from unet import _C

# Shapes from DeepBench's training GEMMs, /work/shared/deepbench/gemm_train.csv (Baidu
# DeepBench, Apache-2.0), copied here because that folder is not shipped with the repo.
# DeepBench's column-major C[m,n] = A[m,k] B[k,n] is a layer with m outputs over a batch
# of n, so for y[M,N] = x[M,K] W[N,K]^T: M = n (batch), N = m, K = k.
SHAPES = [
    # (M, N, K, source)
    (16, 512, 512, "gemm_train.csv line 130: 512,16,512,N,N,DeepSpeech"),
    (128, 1760, 1760, "gemm_train.csv line 5: 1760,128,1760,N,N,DeepSpeech"),
    (128, 3072, 1024, "gemm_train.csv line 73: 3072,128,1024,N,N,DeepSpeech"),
    (700, 1024, 512, "gemm_train.csv line 88: 1024,700,512,N,N,Speaker ID"),
    (8457, 35, 1760, "gemm_train.csv line 47: 35,8457,1760,N,N,DeepSpeech output layer"),
    (512, 1024, 1024, "square reference shape (not from DeepBench)"),
]


def cpu_candidates(M, N, K, dtype, rng):
    x = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((N, K)).astype(dtype)
    b = rng.standard_normal(N).astype(dtype)
    out, pre = np.empty((M, N), dtype), np.empty((M, N), dtype)
    tmp = np.empty((M, N), dtype)

    def numpy_linear():
        np.matmul(x, w.T, out=tmp)
        np.add(tmp, b, out=tmp)
        np.maximum(tmp, 0, out=tmp)

    fns = {
        "unet": lambda: _C.linear_forward(x, w, b, out, pre, "relu"),
        "numpy": numpy_linear,
    }
    try:
        import torch
        import torch.nn.functional as F

        xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))

        def torch_linear():
            with torch.no_grad():
                torch.relu_(F.linear(xt, wt, bt))

        fns["torch"] = torch_linear
    except ImportError:
        pass
    return fns


def cuda_candidates(M, N, K, dtype, rng):
    import cupy as cp

    x = cp.asarray(rng.standard_normal((M, K)).astype(dtype))
    w = cp.asarray(rng.standard_normal((N, K)).astype(dtype))
    b = cp.asarray(rng.standard_normal(N).astype(dtype))
    out, pre, tmp = (cp.empty((M, N), dtype) for _ in range(3))

    def cublas_linear():
        cp.matmul(x, w.T, out=tmp)
        cp.add(tmp, b, out=tmp)
        cp.maximum(tmp, 0, out=tmp)

    def unet_linear():
        _C.linear_forward(x, w, b, out, pre, "relu", cp.cuda.get_current_stream().ptr)

    return {"unet": unet_linear, "cublas": cublas_linear}, cp


def run(device, dtype, repeats, warmup, shapes):
    rng = np.random.default_rng(0)
    results = []
    for M, N, K, source in shapes:
        if device == "cuda":
            fns, cp = cuda_candidates(M, N, K, dtype, rng)
            times = {name: cuda_median_time(cp, fn, repeats, warmup) for name, fn in fns.items()}
        else:
            fns = cpu_candidates(M, N, K, dtype, rng)
            times = {name: median_time(fn, repeats, warmup) for name, fn in fns.items()}
        flops = 2.0 * M * N * K
        results.append({
            "M": M, "N": N, "K": K, "source": source,
            "time_s": times,
            "gflops": {name: flops / t / 1e9 for name, t in times.items()},
            "ratio": {name: times["unet"] / t for name, t in times.items() if name != "unet"},
        })
    return results


def print_table(results):
    peers = [name for name in results[0]["time_s"] if name != "unet"]
    head = f"{'M x N x K':>18} {'unet ms':>9} {'GFLOP/s':>8}"
    head += peer_header(peers)
    print(head)
    for r in results:
        line = f"{r['M']:>6}x{r['N']:>5}x{r['K']:>5} {r['time_s']['unet'] * 1e3:9.3f} {r['gflops']['unet']:8.1f}"
        line += peer_cells(r, peers, 3)
        print(line)
    print("ratio = unet time / peer time (below 1: unet faster)")


def main(argv=None):
    args = parse_args(make_parser(__doc__, repeats=20, warmup=3), argv)

    results = run(args.device, np.dtype(args.dtype), args.repeats, args.warmup, SHAPES)
    print_table(results)
    if args.json:
        write_report(args.json, "gemm", {"kernel": "linear_forward (bias + relu fused)"},
                     {"device": args.device, "dtype": args.dtype, "repeats": args.repeats, "warmup": args.warmup},
                     machine_info(args.device), results)


if __name__ == "__main__":
    main()
