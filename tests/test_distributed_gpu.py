"""The "nccl" backend with world size 1 on a GPU (CuPy + NCCL): collectives and DDP against the CPU."""
import numpy as np
import pytest

import unet
import unet.distributed as dist
from unet import nn, optim
import unet.functional as F

pytestmark = pytest.mark.gpu


@pytest.fixture
def nccl_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    group = dist.init(backend="nccl", timeout=60)
    yield group
    dist.destroy()


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "float16", "bfloat16"])
@pytest.mark.parametrize("size", [1, 7, 4099])
def test_collectives_with_world_size_one(nccl_group, dtype, size):
    rng = np.random.default_rng(size)
    host = rng.integers(-50, 50, size).astype(unet.backend.resolve_dtype(dtype))
    ops = ["sum", "max", "min"] + (["avg"] if dtype not in ("int64",) else [])
    for op in ops:
        t = unet.tensor(host, device="cuda")
        dist.all_reduce(t, op)
        np.testing.assert_array_equal(t.cpu().numpy(), host)
    t = unet.tensor(host, device="cuda")
    dist.broadcast(t, src=0)
    np.testing.assert_array_equal(t.cpu().numpy(), host)
    out = [unet.zeros(size, dtype=dtype, device="cuda")]
    dist.all_gather(out, unet.tensor(host, device="cuda"))
    np.testing.assert_array_equal(out[0].cpu().numpy(), host)
    out = unet.zeros(size, dtype=dtype, device="cuda")
    dist.reduce_scatter(out, [unet.tensor(host, device="cuda")], "sum")
    np.testing.assert_array_equal(out.cpu().numpy(), host)
    dist.barrier()


def test_cpu_tensors_are_refused_by_nccl(nccl_group):
    with pytest.raises(ValueError, match="backend 'nccl' works on cuda tensors"):
        dist.all_reduce(unet.ones(3))


def test_ddp_on_gpu_equals_plain_training(nccl_group):
    def make():
        unet.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 32, activation="tanh"), nn.Linear(32, 3)).to("cuda")

    model, plain = make(), make()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.0005)  # several buckets on the side stream
    opts = [optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ddp, plain)]
    for step in range(10):
        x, y = unet.randn(8, 6).to("cuda"), unet.randn(8, 3).to("cuda")
        for m, opt in zip((ddp, plain), opts):
            opt.zero_grad()
            F.mse_loss(m(x), y).backward()
            opt.step()
    for p, q in zip(model.parameters(), plain.parameters()):
        np.testing.assert_allclose(p.cpu().numpy(), q.cpu().numpy(), rtol=1e-6, atol=1e-7)
