"""unet.distributed on CPU: multi-process runs under mpiexec (2 and 4 ranks on however many
cores there are), the process group alone in this process, the sampler against torch."""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import unet
import unet.distributed as dist
from unet import nn, optim
import unet.functional as F

from dist_run import HARD_TIMEOUT_S, assert_ok, run_ranks

pytest.importorskip("mpi4py", reason="the distributed tests need mpi4py and an MPI (the test extra)")


@pytest.mark.parametrize("nprocs", [2, 4])
def test_collectives_against_numpy(nprocs):
    assert_ok(run_ranks(nprocs, "dist_worker_collectives.py"), nprocs, "collectives")


@pytest.mark.parametrize("nprocs", [2, 4])
def test_ddp_equals_single_process_training(nprocs):
    # also: no_sync accumulation == a larger batch, unused parameters, inf on one rank, mismatches
    assert_ok(run_ranks(nprocs, "dist_worker_ddp.py"), nprocs, "ddp")


FAULT_DEADLINE_S = 30  # a failure anywhere ends the whole job within this


def run_fault(mode, timeout_s=None):
    """3 ranks, rank 1 fails; the job must end non-zero within 30 s and leave no rank behind."""
    started = time.monotonic()
    result = run_ranks(3, "dist_worker_fault.py", mode, timeout_s=timeout_s)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "finished 1000 steps" not in output, output[-3000:]
    assert elapsed < FAULT_DEADLINE_S, f"the job took {elapsed:.1f} s to end"
    pids = {int(rank): int(pid) for rank, pid in re.findall(r"rank (\d) pid (\d+)", output)}
    assert sorted(pids) == [0, 1, 2], output[-3000:]
    assert_no_process_left(pids.values())
    return output


def assert_no_process_left(pids, within_s=5.0):
    """No rank is still running (a zombie waiting for its reaper is gone for good)."""
    deadline = time.monotonic() + within_s
    while True:
        alive = [pid for pid in pids if _running(pid)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not alive, f"orphan worker processes left: {alive}"


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_rank_that_raises_ends_the_job_with_its_traceback():
    output = run_fault("raise")
    assert "Traceback (most recent call last)" in output and "ValueError: a bad batch on rank 1" in output
    assert "rank 1 of 3 failed with ValueError; aborting every rank" in output


def test_a_rank_killed_inside_an_all_reduce_is_named_with_every_ranks_collective():
    output = run_fault("kill")
    assert "unet launch: rank 1 (pid" in output and "died first" in output, output[-3000:]
    for survivor in (0, 2):  # the launcher stops them at once; their collective is on record
        assert re.search(rf"rank {survivor} waiting in all_reduce \(collective #\d+\)", output), output[-3000:]


def test_a_hung_rank_is_named_by_every_other_rank_within_the_timeout():
    output = run_fault("hang", timeout_s=3)
    for survivor in (0, 2):
        assert re.search(rf"rank {survivor}: all_reduce \(collective #\d+\) (did not complete within 3 s;|"
                         r"cannot complete:) rank\(s\) \[1\] did not answer", output), output[-3000:]
    assert "DistributedTimeoutError" in output


def test_the_rank_that_finds_a_dead_one_tells_the_others_at_once():
    # rank 2 waits 2.5 s less than rank 0: rank 0's finding reaches it before its own timeout ends
    output = run_fault("hang_late", timeout_s=3)
    assert "rank 0: all_reduce" in output and "did not complete within 3 s; rank(s) [1] did not answer" in output
    assert re.search(r"rank 2: all_reduce \(collective #\d+\) cannot complete: rank\(s\) \[1\] did not "
                     r"answer rank 0", output), output[-3000:]


def test_ranks_that_disagree_are_named_and_inf_on_one_rank_skips_every_step():
    # different collectives, different sizes, different DDP models: errors naming both ranks;
    # GradScaler with and without DDP: the inf step skipped everywhere, equal scales
    assert_ok(run_ranks(3, "dist_worker_mismatch.py"), 3, "mismatch")


# ---------------------------------------------------------------- alone in this process
@pytest.fixture
def alone():
    group = dist.init(backend="mpi", timeout=30)
    yield group
    dist.destroy()


def test_a_single_process_group(alone):
    assert dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
    assert dist.get_backend() == "mpi"
    t = unet.tensor([1.5, -2.0])
    dist.all_reduce(t, "avg")
    np.testing.assert_array_equal(t.numpy(), [1.5, -2.0])
    out = [unet.zeros(2)]
    dist.all_gather(out, t)
    np.testing.assert_array_equal(out[0].numpy(), [1.5, -2.0])
    with pytest.raises(RuntimeError, match="already joined a process group"):
        dist.init(backend="mpi")


def test_ddp_alone_equals_plain_training(alone):
    unet.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8, activation="gelu"), nn.Linear(8, 2))
    unet.manual_seed(0)
    plain = nn.Sequential(nn.Linear(5, 8, activation="gelu"), nn.Linear(8, 2))
    ddp = dist.DistributedDataParallel(model)
    opts = [optim.Adam(m.parameters(), lr=1e-2) for m in (ddp, plain)]
    for step in range(5):
        x, y = unet.randn(6, 5), unet.randn(6, 2)
        for m, opt in zip((ddp, plain), opts):
            opt.zero_grad()
            F.mse_loss(m(x), y).backward()
            opt.step()
    for p, q in zip(model.parameters(), plain.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_bad_arguments_are_named():
    with pytest.raises(RuntimeError, match=r"call unet.distributed.init\(\) first"):
        dist.get_rank()
    with pytest.raises(ValueError, match="backend: expected 'nccl' or 'mpi'"):
        dist.init(backend="gloo")
    with pytest.raises(ValueError, match="timeout: expected a positive number of seconds"):
        dist.init(backend="mpi", timeout=-1)
    with pytest.raises(ValueError, match="nprocs: expected a positive int"):
        dist.mpiexec_command(0, ["train.py"])
    with pytest.raises(FileNotFoundError, match="hostfile"):
        dist.mpiexec_command(2, ["train.py"], hostfile="/no/such/hostfile")


def test_mpi_backend_needs_an_mpi_launch_when_world_size_is_set(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="not started by an MPI launcher"):
        dist.init(backend="mpi")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="expected 0 <= RANK < WORLD_SIZE"):
        dist.init(backend="mpi")
    assert not dist.is_initialized()


def test_launch_command():
    command = dist.mpiexec_command(4, ["train.py", "--lr", "0.1"], env={"UNET_DIST_TIMEOUT": "60"})
    assert os.path.basename(command[0]) in ("mpiexec", "mpirun") and command[1:3] == ["-n", "4"]
    assert command[-4:] == [sys.executable, "train.py", "--lr", "0.1"]
    assert "UNET_DIST_TIMEOUT" in " ".join(command)


# ---------------------------------------------------------------- sampler
@pytest.mark.parametrize("size", [10, 11, 3])
@pytest.mark.parametrize("replicas", [1, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_matches_torch_without_shuffle(size, replicas, drop_last):
    torch_data = pytest.importorskip("torch.utils.data")
    data = list(range(size))
    for rank in range(replicas):
        ours = dist.DistributedSampler(data, replicas, rank, shuffle=False, drop_last=drop_last)
        theirs = torch_data.DistributedSampler(data, replicas, rank, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_sampler_shuffles_per_epoch_and_shards_disjointly():
    data = list(range(23))
    samplers = [dist.DistributedSampler(data, 4, r, seed=5) for r in range(4)]
    shards = [list(s) for s in samplers]
    assert {len(s) for s in shards} == {6}                      # 23 padded to 24
    assert sorted(set(sum(shards, []))) == data                  # every example somewhere
    assert len(sum(shards, [])) - len(set(sum(shards, []))) == 1  # one pad repeat
    for s in samplers:
        s.set_epoch(1)
    assert [list(s) for s in samplers] != shards
    assert list(dist.DistributedSampler(data, 4, 2, seed=5)) == shards[2]  # same seed, same order
    dropped = [list(dist.DistributedSampler(data, 4, r, seed=5, drop_last=True)) for r in range(4)]
    assert {len(s) for s in dropped} == {5} and len(set(sum(dropped, []))) == 20
    with pytest.raises(ValueError, match=r"rank: expected an int in \[0, 4\)"):
        dist.DistributedSampler(data, 4, 4)
    with pytest.raises(ValueError, match="epoch: expected a non-negative int"):
        samplers[0].set_epoch(-1)


def test_rendezvous_hands_rank0_payload_to_every_rank():
    import socket
    import threading

    from unet.distributed.rendezvous import share_from_rank0

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    got = {}
    threads = [threading.Thread(target=lambda r=r: got.__setitem__(
        r, share_from_rank0(b"id-123" if r == 0 else None, r, 3, "127.0.0.1", port, timeout=20)))
        for r in (1, 2, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == {0: b"id-123", 1: b"id-123", 2: b"id-123"}
    with pytest.raises(TimeoutError, match="could not reach rank 0"):
        share_from_rank0(None, 1, 2, "127.0.0.1", port, timeout=0.5)


def _unet_train_on_two_ranks(out, *argv):
    command = [sys.executable, "-m", "unet", "launch", "-n", "2", "-m", "unet", "train", "--gpus", "0",
               "--examples", "120", "--hidden", "8", "--embedding", "8", "--batch-size", "16",
               "--no-progress", "--out", str(out), *argv]
    environ = dict(os.environ, OMP_NUM_THREADS="1")  # the ranks import the unet this test imports
    result = subprocess.run(command, capture_output=True, text=True, timeout=HARD_TIMEOUT_S, env=environ)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout


def test_unet_train_data_parallel_logs_once_and_resumes_exactly(tmp_path):
    straight = _unet_train_on_two_ranks(tmp_path / "straight", "--epochs", "2")
    assert straight.count("done: held-out") == 1 and straight.count("epoch 2/2") == 1  # rank 0 alone
    assert "data parallel: 2 processes (mpi), 54 training examples each" in straight
    _unet_train_on_two_ranks(tmp_path / "resumed", "--epochs", "2", "--stop-after", "1")
    _unet_train_on_two_ranks(tmp_path / "resumed", "--resume")
    a, b = (unet.load(str(tmp_path / run / "checkpoint.unet")) for run in ("straight", "resumed"))
    weights = a["model"]["state"]
    assert len(weights) > 5 and set(weights) == set(b["model"]["state"])
    for key, value in weights.items():
        np.testing.assert_array_equal(value.numpy(), b["model"]["state"][key].numpy(), err_msg=key)
