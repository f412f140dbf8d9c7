"""Run under mpiexec -n N with argv[1] in raise|kill|hang|hang_late: rank 1 fails at step 3 of DDP
training (kill: from a gradient hook, while its first gradient buckets are being all-reduced;
hang_late: rank 2 reaches that step's collectives 2.5 s after rank 0)."""
import os
import signal
import sys
import time

import unet
import unet.distributed as dist
from unet import nn, optim
import unet.functional as F

mode = sys.argv[1]
dist.init(backend="mpi")  # timeout from UNET_DIST_TIMEOUT
rank = dist.get_rank()
print(f"rank {rank} pid {os.getpid()}", flush=True)
unet.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32, activation="tanh"), nn.Linear(32, 32, activation="tanh"), nn.Linear(32, 1))
ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.001)  # several buckets
opt = optim.SGD(ddp.parameters(), lr=0.01)
step = 0
if mode == "kill" and rank == 1:
    # the first layer's weight is the last gradient of backward: the other buckets are in flight
    model[0].weight.register_post_accumulate_grad_hook(
        lambda p: os.kill(os.getpid(), signal.SIGKILL) if step == 3 else None)
for step in range(1000):
    if rank == 1 and step == 3:
        if mode == "raise":
            raise ValueError("a bad batch on rank 1")
        if mode.startswith("hang"):
            time.sleep(600)
    if rank == 2 and step == 3 and mode == "hang_late":
        time.sleep(2.5)
    loss = F.mse_loss(ddp(unet.randn(16, 8)), unet.randn(16, 1))
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"rank {rank}: finished 1000 steps although rank 1 failed", flush=True)
