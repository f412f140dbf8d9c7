"""Run under mpiexec -n N: DistributedDataParallel against single-process training."""

import numpy as np
import pytest

import unet
import unet.distributed as dist
from unet import nn, optim
import unet.functional as F

dist.init(backend="mpi", timeout=60)
rank, world = dist.get_rank(), dist.get_world_size()
PER_RANK, STEPS = 4, 20


def make_model(seed):
    unet.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16, activation="tanh"), nn.Linear(16, 16, activation="relu"),
                         nn.Linear(16, 3))


def batch(step, count):
    rng = np.random.default_rng(step)
    return (unet.tensor(rng.standard_normal((count, 6)).astype(np.float32)),
            unet.tensor(rng.standard_normal((count, 3)).astype(np.float32)))


def shard(tensor, part, parts):
    n = tensor.shape[0] // parts
    return tensor[part * n:(part + 1) * n]


# 1. 20 steps of DDP == 20 steps of one process on the concatenated batch.
# Each rank starts from different weights: the wrap must copy rank 0's.
model = make_model(seed=rank)
reference = make_model(seed=0)
ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.001)  # ~1 KB: several buckets
assert len(ddp._buckets) > 1
launched_early = []
# layer 0's weight finishes last in backward: by then the first buckets must already be in flight
model[0].weight.register_post_accumulate_grad_hook(
    lambda p: launched_early.append(ddp._buckets[0].work is not None))
opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
ref_opt = optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
for step in range(STEPS):
    x, y = batch(step, PER_RANK * world)
    loss = F.mse_loss(ddp(shard(x, rank, world)), shard(y, rank, world))
    opt.zero_grad()
    loss.backward()
    opt.step()
    ref_loss = F.mse_loss(reference(x), y)
    ref_opt.zero_grad()
    ref_loss.backward()
    ref_opt.step()
assert all(launched_early) and len(launched_early) == STEPS
for (name, p), q in zip(model.named_parameters(), reference.parameters()):
    np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-5, atol=2e-6, err_msg=name)
assert list(ddp.state_dict())[0].startswith("module.")

# 2. no_sync: two micro-batches accumulated locally, then one averaged step == one larger batch
model, reference = make_model(7), make_model(7)
ddp = dist.DistributedDataParallel(model)
opt, ref_opt = optim.SGD(ddp.parameters(), lr=0.05), optim.SGD(reference.parameters(), lr=0.05)
for step in range(3):
    x, y = batch(100 + step, 2 * PER_RANK * world)
    opt.zero_grad()
    micro = [(shard(x, 2 * rank + k, 2 * world), shard(y, 2 * rank + k, 2 * world)) for k in range(2)]
    with ddp.no_sync():
        (F.mse_loss(ddp(micro[0][0]), micro[0][1]) / 2).backward()
    local = [p.grad.numpy().copy() for p in model.parameters()]
    (F.mse_loss(ddp(micro[1][0]), micro[1][1]) / 2).backward()
    opt.step()
    ref_opt.zero_grad()
    F.mse_loss(reference(x), y).backward()
    ref_opt.step()
for p, q in zip(model.parameters(), reference.parameters()):
    np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-5, atol=2e-6)
# inside no_sync nothing was averaged: the local gradients differ between ranks
gathered = [unet.zeros(*local[0].shape) for _ in range(world)]
dist.all_gather(gathered, unet.tensor(local[0]))
assert not np.allclose(gathered[0].numpy(), gathered[1].numpy())


# 3. parameters that get no gradient: an error naming them, or zeros with find_unused_parameters
class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.never = nn.Linear(4, 2), nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x, head):
        return (self.a if head == "a" else self.b)(x)


unet.manual_seed(3)
ddp = dist.DistributedDataParallel(TwoHeads())
with pytest.raises(RuntimeError, match=r"got no gradient .*never\.weight"):
    ddp(unet.ones(2, 4), "a").sum().backward()
unet.manual_seed(3)
twoheads = TwoHeads()
ddp = dist.DistributedDataParallel(twoheads, find_unused_parameters=True)
ddp(unet.ones(2, 4), "a" if rank == 0 else "b").sum().backward()  # rank 0 uses a, the others b
np.testing.assert_allclose(twoheads.a.bias.grad.numpy(), np.full(2, 2.0 / world), rtol=1e-6)
np.testing.assert_allclose(twoheads.b.bias.grad.numpy(), np.full(2, 2.0 * (world - 1) / world), rtol=1e-6)
assert twoheads.never.weight.grad is None  # no rank used it: it keeps no gradient, as in torch

# 4. an inf on one rank reaches every rank's averaged gradients (GradScaler then skips everywhere)
model = make_model(1)
ddp = dist.DistributedDataParallel(model)
x, y = batch(0, PER_RANK)
if rank == world - 1:
    x = x * float("inf")
F.mse_loss(ddp(x), y).backward()
found_inf = not all(np.isfinite(p.grad.numpy()).all() for p in model.parameters())
assert found_inf and dist.all_reduce_found_inf(found_inf)

# 5. wrapping different models is refused on every rank
with pytest.raises(ValueError, match="the ranks wrap different models"):
    dist.DistributedDataParallel(nn.Linear(4, 2 + rank))
with pytest.raises(ValueError, match="bucket_cap_mb: expected a positive number"):
    dist.DistributedDataParallel(make_model(0), bucket_cap_mb=0)
print(f"rank {rank}: ddp OK", flush=True)
