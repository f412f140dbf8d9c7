"""Exact resume, alone or under `unet launch -n N` (DistributedDataParallel, a shard per rank).

    python dist_worker_resume.py OUT straight   # 3 epochs in one go, then again with a Ctrl-C
                                                # in mid-epoch 2 that saves OUT/checkpoint.unet
    python dist_worker_resume.py OUT resume     # a new process: load it and train to the end

Float16 autocast with a GradScaler that backs off and grows, dropout, a shuffled loader. Each
phase writes OUT/<run>-rank<r>.unet: the trainer's whole state (weights, optimizer moments,
scaler, RNG, data position, history), unet's random state now, and every step's loss and scale.
"""
import os
import signal
import sys

import unet
import unet.distributed as dist
from unet import amp, optim
from unet.data import DataLoader, PairDataset, TextEncoder, dates_task
from unet.data.datasets import Dataset
from unet.models import Seq2Seq
from unet.models.trainer import Trainer, TrainingInterrupted

EPOCHS = 3
out, phase = sys.argv[1], sys.argv[2]
dist.init(backend="mpi", timeout=60)  # alone: a group of one
rank, distributed = dist.get_rank(), dist.get_world_size() > 1
path = os.path.join(out, "checkpoint.unet")

pairs = PairDataset.from_pairs(dates_task(120, seed=3))
source, target = TextEncoder("char").fit(pairs.sources), TextEncoder("char").fit(pairs.targets)
dataset = pairs.encode(source, target)
if distributed:  # this rank's shard, as `unet train` deals it
    indices = list(dist.DistributedSampler(dataset, dist.get_world_size(), rank, shuffle=True, seed=7))
    dataset = Dataset({name: [dataset.column(name)[i] for i in indices] for name in dataset.columns},
                      dataset.sequences)


def loader():
    return DataLoader(dataset, 16, seed=0)


def watched(trainer, losses, stop_at=None):
    """Record every step's loss and loss scale; with ``stop_at``, Ctrl-C this process during that step."""
    step = trainer.train_step

    def train_step(batch):
        if trainer.step + 1 == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
        loss = step(batch)
        losses.append((float(loss.item()), trainer.scaler.get_scale()))
        return loss
    trainer.train_step = train_step
    if distributed:  # its gradient hooks average every backward pass over the ranks
        dist.DistributedDataParallel(trainer.model)
    return trainer


def new_trainer():
    unet.manual_seed(0)
    model = Seq2Seq(len(source), len(target), embedding_dim=8, hidden_size=16, dropout=0.2)
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    spec = {"name": "warmup_cosine", "warmup_iters": 3, "total_iters": EPOCHS * len(loader())}
    # a scale so large that the first steps overflow (skipped, backed off), then quick growth
    return Trainer(model, opt, spec, clip=1.0, progress=False, amp="fp16",
                   scaler=amp.GradScaler(init_scale=2.0 ** 24, growth_interval=3))


def dump(run, trainer, losses):
    state = trainer.state_dict()
    state.update(losses=losses, rng_now=unet.backend.random_state.get_state())
    unet.save(state, os.path.join(out, f"{run}-rank{rank}.unet"))


if phase == "straight":
    losses = []
    trainer = watched(new_trainer(), losses)
    trainer.fit(loader(), epochs=EPOCHS)
    dump("straight", trainer, losses)
    losses = []
    trainer = new_trainer()
    half = EPOCHS * len(loader()) // 2
    assert half % len(loader()), "the stop must fall in mid-epoch"
    watched(trainer, losses, stop_at=half)
    try:
        trainer.fit(loader(), epochs=EPOCHS, checkpoint=path if rank == 0 else None)
        raise AssertionError("the Ctrl-C did not stop training")
    except TrainingInterrupted:
        assert trainer.step == half
    dump("first", trainer, losses)
else:
    unet.manual_seed(123)  # disturb the random state: resuming must restore it
    losses = []
    trainer = watched(Trainer.load(path, progress=False), losses)
    trainer.fit(loader(), epochs=EPOCHS)
    dump("resumed", trainer, losses)
print(f"rank {rank}: {phase} OK", flush=True)
