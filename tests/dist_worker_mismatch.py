"""Run under mpiexec -n 3: ranks that disagree are told so (naming both ranks), never left hanging;
an inf gradient on one rank makes every rank's GradScaler skip the same step."""
import numpy as np
import pytest

import unet
import unet.distributed as dist
from unet import amp, nn, optim
import unet.functional as F

dist.init(backend="mpi", timeout=20)
rank, world = dist.get_rank(), dist.get_world_size()
assert world == 3

# 1. different collectives at the same point: rank 1 broadcasts while the others all-reduce
t = unet.ones(10)
with pytest.raises(dist.DistributedError) as error:
    if rank == 1:
        dist.broadcast(t, src=0)
    else:
        dist.all_reduce(t)
message = str(error.value)
assert ("rank 0 all_reduce(sum) of 10 float32 as collective #1 while rank 1 broadcast(src=0) of 10 float32 "
        "as collective #1") in message, message
np.testing.assert_array_equal(t.numpy(), np.ones(10))  # nothing was sent

# 2. the same collective on different sizes (rank 2: 12 elements); the group is still usable after
with pytest.raises(dist.DistributedError) as error:
    dist.all_reduce(unet.ones(12 if rank == 2 else 10))
message = str(error.value)
assert "rank 0 all_reduce(sum) of 10 float32 as collective #2 while rank 2 all_reduce(sum) of 12 float32" in message
dist.all_reduce(t)
np.testing.assert_array_equal(t.numpy(), np.full(10, 3.0))

# 3. DDP over models whose parameter shapes differ (6x4 against 4x6), though count and elements agree
with pytest.raises(ValueError) as error:
    dist.DistributedDataParallel(nn.Linear(6, 4, bias=False) if rank == 1 else nn.Linear(4, 6, bias=False))
message = str(error.value)
assert "the ranks wrap different models (rank 0: 1 parameters, 24 elements" in message, message
assert "; rank 1: 1 parameters, 24 elements" in message, message
assert f"this rank ({rank}) has shapes [{(4, 6) if rank == 1 else (6, 4)}]" in message, message


# 4. an inf gradient on one rank: every rank's scaler skips that step and the scales stay equal,
# with DDP (the average spreads the inf) and without it (only the agreed check does)
def scaler_run(wrap):
    unet.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8, activation="tanh"), nn.Linear(8, 1))
    trained = dist.DistributedDataParallel(model) if wrap else model
    opt = optim.Adam(model.parameters(), lr=1e-2)
    scaler = amp.GradScaler(init_scale=2.0 ** 8, growth_interval=2)
    skipped, scales = [], []
    for step in range(4):
        x = unet.tensor(np.random.default_rng([step, rank]).standard_normal((4, 5)).astype(np.float32))
        if step == 1 and rank == 2:
            x = x * float("inf")
        opt.zero_grad()
        with amp.autocast("fp16"):
            loss = F.mse_loss(trained(x), unet.zeros(4, 1))
        before = [p.numpy().copy() for p in model.parameters()]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        skipped.append(all(np.array_equal(b, p.numpy()) for b, p in zip(before, model.parameters())))
        scales.append(scaler.get_scale())
    return skipped, scales


for wrap in (True, False):
    skipped, scales = scaler_run(wrap)
    assert skipped == [False, True, False, False], (wrap, skipped)
    assert scales == [2.0 ** 8, 2.0 ** 7, 2.0 ** 7, 2.0 ** 8], (wrap, scales)
    everyone = [unet.zeros(4) for _ in range(world)]
    dist.all_gather(everyone, unet.tensor(np.array(scales, np.float32)))
    assert all(np.array_equal(e.numpy(), scales) for e in everyone)

print(f"rank {rank}: mismatch OK", flush=True)
