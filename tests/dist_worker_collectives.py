"""Run under mpiexec -n N: every collective, several dtypes and sizes, against numpy."""
import numpy as np
import pytest

import unet
import unet.distributed as dist

dist.init(backend="mpi", timeout=60)
rank, world = dist.get_rank(), dist.get_world_size()
DTYPES = ["float32", "float64", "int64", "int32", "bfloat16", "float16"]
SIZES = [1, 7, 1000, 4099]  # 7 and 4099: not divisible by the world size


def data(r, dtype, shape):
    rng = np.random.default_rng([r, int(np.prod(shape))])
    if np.dtype(unet.backend.resolve_dtype(dtype)).kind in "iu":
        return rng.integers(-50, 50, shape).astype(dtype)
    return rng.standard_normal(shape).astype(unet.backend.resolve_dtype(dtype))


def check(got, expected, dtype):
    got = np.asarray(got.numpy(), np.float64)
    tol = {"bfloat16": 2e-2, "float16": 4e-3, "float32": 1e-6, "float64": 1e-13}.get(dtype, 0)
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * world)


for dtype in DTYPES:
    for size in SIZES:
        shape = (size,) if size < 1000 else (size // 7, 7) if size % 7 == 0 else (size,)
        everyone = np.stack([data(r, dtype, shape).astype(np.float64) for r in range(world)])
        ops = {"sum": everyone.sum(0), "max": everyone.max(0), "min": everyone.min(0)}
        if np.dtype(unet.backend.resolve_dtype(dtype)).kind not in "iu":
            ops["avg"] = everyone.mean(0)
        for op, expected in ops.items():
            t = unet.tensor(data(rank, dtype, shape))
            dist.all_reduce(t, op)
            check(t, expected.astype(unet.backend.resolve_dtype(dtype)).astype(np.float64), dtype)
        src = world - 1
        t = unet.tensor(data(rank, dtype, shape))
        dist.broadcast(t, src=src)
        check(t, everyone[src], dtype)
        out = [unet.zeros(*shape, dtype=dtype) for _ in range(world)]
        dist.all_gather(out, unet.tensor(data(rank, dtype, shape)))
        for r in range(world):
            check(out[r], everyone[r], dtype)
        # reduce_scatter: rank r's input_list[j] is data(r * world + j); rank j gets the sum over r
        inputs = [unet.tensor(data(rank * world + j, dtype, shape)) for j in range(world)]
        out = unet.zeros(*shape, dtype=dtype)
        dist.reduce_scatter(out, inputs, "sum")
        expected = sum(data(r * world + rank, dtype, shape).astype(np.float64) for r in range(world))
        check(out, expected, dtype)

# a non-contiguous view is reduced in place through a staging copy
base = unet.tensor(data(rank, "float64", (6, 5)))
view = base.T
dist.all_reduce(view, "sum")
np.testing.assert_allclose(base.numpy(), sum(data(r, "float64", (6, 5)) for r in range(world)))

# async: overlap two reductions, wait for both
a, b = unet.ones(10), unet.full((3,), float(rank))
works = [dist.all_reduce(a, async_op=True), dist.all_reduce(b, "max", async_op=True)]
assert all(w.wait() for w in works) and all(w.is_completed() for w in works)
assert (a.numpy() == world).all() and (b.numpy() == world - 1).all()

# the GradScaler helper: one rank's inf is every rank's
assert dist.all_reduce_found_inf(rank == world - 1) is True
assert dist.all_reduce_found_inf(False) is False
flag = unet.tensor([1.0 if rank == 0 else 0.0])
assert dist.all_reduce_found_inf(flag).item() == 1.0
dist.barrier()

# any picklable object, of a different size on each rank
objects = [None] * world
dist.all_gather_object(objects, {"rank": rank, "big": 2**100 + rank, "pad": "x" * rank})
assert objects == [{"rank": r, "big": 2**100 + r, "pad": "x" * r} for r in range(world)]
with pytest.raises(ValueError, match=f"object_list: expected a list of {world} items"):
    dist.all_gather_object([], 1)

# bad input names the argument
with pytest.raises(TypeError, match="tensor: expected a floating-point or integer tensor"):
    dist.all_reduce(unet.tensor([True]))
with pytest.raises(ValueError, match="op: expected one of"):
    dist.all_reduce(unet.ones(2), "prod")
with pytest.raises(TypeError, match="op: 'avg' needs a floating-point tensor"):
    dist.all_reduce(unet.tensor([1, 2]), "avg")
with pytest.raises(ValueError, match="tensor_list: expected a list of"):
    dist.all_gather([unet.ones(2)] * (world + 1), unet.ones(2))
with pytest.raises(ValueError, match=r"input_list\[0\]: expected shape"):
    dist.reduce_scatter(unet.ones(2), [unet.ones(3)] * world)
with pytest.raises(ValueError, match="src: expected a rank"):
    dist.broadcast(unet.ones(2), src=world)
with pytest.raises(TypeError, match="tensor: expected a unet.Tensor"):
    dist.all_reduce(np.ones(2))
dist.barrier()
print(f"rank {rank}: collectives OK", flush=True)
dist.destroy()
