"""unet.models.trainer: exact resume, atomic checkpoints, metrics, checked weight loading."""
import glob
import math
import os
import signal

import numpy as np
import pytest

import unet
from unet import checkpoint, optim
from unet.data import DataLoader, PairDataset, TextEncoder, dates_task
from unet.models import LanguageModel, Seq2Seq
from unet.models.trainer import (CheckpointError, Trainer, TrainingError, TrainingInterrupted, build_model,
                                 load_model_state, make_scheduler, read_checkpoint, summarize)


@pytest.fixture(scope="module")
def data():
    pairs = PairDataset.from_pairs(dates_task(120, seed=3))
    source, target = TextEncoder("char").fit(pairs.sources), TextEncoder("char").fit(pairs.targets)
    return pairs.encode(source, target), len(source), len(target)


def make_trainer(data, seed=0, epochs=2, dropout=0.2):
    dataset, sv, tv = data
    unet.manual_seed(seed)
    model = Seq2Seq(sv, tv, embedding_dim=8, hidden_size=16, dropout=dropout)  # dropout: resume must restore RNG
    loader = DataLoader(dataset, 16, seed=seed)
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    spec = {"name": "warmup_cosine", "warmup_iters": 3, "total_iters": epochs * len(loader)}
    return Trainer(model, opt, spec, clip=1.0, progress=False), loader


def params(model):
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


def straight_run(data, epochs=2):
    trainer, loader = make_trainer(data, epochs=epochs)
    trainer.fit(loader, epochs=epochs)
    return trainer


def test_two_epochs_equal_one_then_resume_for_one_bitwise(data, tmp_path):
    straight = straight_run(data)
    path = tmp_path / "ck.unet"
    first, loader = make_trainer(data)
    first.fit(loader, epochs=1, checkpoint=path)
    unet.manual_seed(123)  # disturb the global RNG: resuming must restore it
    resumed = Trainer.load(path, progress=False)  # model, optimizer and schedule rebuilt from the file
    assert (resumed.epoch, resumed.step) == (1, len(loader))
    resumed.fit(DataLoader(data[0], 16, seed=0), epochs=2)
    assert_bitwise_equal(params(straight.model), params(resumed.model))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("at", [10, 8, 16])  # mid-epoch 2, after the last batch of epoch 1 and of epoch 2
def test_ctrl_c_saves_a_consistent_state_that_resumes_exactly(at, data, tmp_path):
    straight = straight_run(data)
    path = tmp_path / "ck.unet"
    trainer, loader = make_trainer(data)
    real_loss, calls = trainer.model.loss, []

    def loss_then_ctrl_c(batch):
        calls.append(1)
        if len(calls) == at:  # 8 batches an epoch
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(batch)

    trainer.model.loss = loss_then_ctrl_c
    with pytest.raises(TrainingInterrupted) as stopped:
        trainer.fit(loader, epochs=2, checkpoint=path)
    assert stopped.value.checkpoint == path and trainer.step == at  # the running step finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    saved = read_checkpoint(path)
    assert saved["trainer"]["step"] == at and saved["data"]["position"] == (at - 1) % 8 + 1
    assert saved["trainer"]["epoch"] == (at - 1) // 8
    resumed = Trainer.load(path, progress=False)
    resumed.fit(DataLoader(data[0], 16, seed=0), epochs=2)
    assert resumed.step == 16 and resumed.epoch == 2
    assert_bitwise_equal(params(straight.model), params(resumed.model))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]


def test_a_failed_save_leaves_the_previous_checkpoint_loadable(data, tmp_path, monkeypatch):
    path = tmp_path / "ck.unet"
    trainer, loader = make_trainer(data)
    trainer.fit(loader, epochs=1, checkpoint=path)
    before = params(trainer.model)
    trainer.fit(loader, epochs=2)

    def disk_full(arrays, metadata=None):
        raise OSError(28, "No space left on device")  # while the temporary file is open

    monkeypatch.setattr(checkpoint, "_serialize", disk_full)
    with pytest.raises(OSError, match="No space"):
        trainer.save(path)
    monkeypatch.undo()
    assert glob.glob(str(tmp_path / ".*tmp")) == []  # the temporary file is gone
    restored = Trainer.load(path, progress=False)
    assert restored.epoch == 1
    assert_bitwise_equal(before, params(restored.model))


def test_interrupt_during_save_keeps_the_old_file(data, tmp_path, monkeypatch):
    path = tmp_path / "ck.unet"
    trainer, loader = make_trainer(data)
    trainer.fit(loader, epochs=1, checkpoint=path)
    original = path.read_bytes()

    def interrupted(arrays, metadata=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_serialize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(path)
    assert path.read_bytes() == original


def test_summarize_metrics_math():
    m = summarize({"loss_sum": 10.0, "tokens": 5, "correct": 4, "examples": 2, "exact": 1})
    assert m["loss"] == 2.0 and m["perplexity"] == pytest.approx(math.exp(2.0))
    assert m["accuracy"] == 0.8 and m["exact_match"] == 0.5 and m["tokens"] == 5.0
    per_example = summarize({"loss_sum": np.float32(3.0), "examples": 4, "correct": 3})
    assert per_example["loss"] == 0.75 and per_example["accuracy"] == 0.75 and "perplexity" not in per_example
    assert summarize({"loss_sum": 1e6, "tokens": 1})["perplexity"] == math.exp(700.0)  # no overflow
    assert summarize({"examples": 0}) == {"examples": 0.0}


def test_evaluate_sums_over_batches(data):
    trainer, _ = make_trainer(data)
    loader = DataLoader(data[0], 32, shuffle=False)
    metrics = trainer.evaluate(loader)
    sums = [trainer.model.evaluate_batch(b) for b in loader]
    assert metrics["examples"] == len(data[0]) == sum(s["examples"] for s in sums)
    assert metrics["loss"] == pytest.approx(sum(s["loss_sum"] for s in sums) / sum(s["tokens"] for s in sums))
    assert metrics["exact_match"] == sum(s["exact"] for s in sums) / len(data[0])
    assert trainer.model.training  # evaluate restores the mode


def test_fit_reports_valid_metrics_and_the_loss_falls(data):
    trainer, loader = make_trainer(data, epochs=3, dropout=0.0)
    seen = []
    history = trainer.fit(loader, DataLoader(data[0], 64, shuffle=False), epochs=3,
                          on_epoch_end=lambda t, m: seen.append(m["epoch"]) or {"extra_metric": 1.0})
    assert seen == [1, 2, 3] and [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"valid_loss", "valid_accuracy", "valid_exact_match", "extra_metric", "lr"} <= set(history[-1])
    assert trainer.fit(loader, epochs=3) is history and len(history) == 3  # nothing left to do


def test_checkpoint_names_missing_and_misshaped_tensors(data, tmp_path):
    path = tmp_path / "ck.unet"
    trainer, _ = make_trainer(data)
    trainer.save(path)
    _, sv, tv = data
    wider = Seq2Seq(sv, tv, embedding_dim=8, hidden_size=24)
    with pytest.raises(CheckpointError) as e:
        Trainer.load(path, model=wider)
    message = str(e.value)
    assert str(path) in message and "mis-shaped tensors" in message
    assert "encoder.weight_ih_l0 (checkpoint (64, 8), model (96, 8))" in message

    state = read_checkpoint(path)
    del state["model"]["state"]["output.weight"], state["model"]["state"]["output.bias"]
    state["model"]["state"]["stray.weight"] = np.zeros(3, np.float32)
    checkpoint.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing tensors: output\.weight, output\.bias.*"
                                              r"unexpected tensors: stray\.weight"):
        build_model(read_checkpoint(path), str(path))
    untouched = Seq2Seq(sv, tv, embedding_dim=8, hidden_size=16)
    before = params(untouched)
    with pytest.raises(CheckpointError):
        load_model_state(untouched, state["model"]["state"])
    assert_bitwise_equal(before, params(untouched))  # nothing half-loaded


def test_load_rejects_files_that_are_not_trainer_checkpoints(tmp_path):
    unet.save({"weights": np.zeros(3)}, tmp_path / "other.unet")
    with pytest.raises(CheckpointError, match="not a unet training checkpoint"):
        Trainer.load(tmp_path / "other.unet")
    (tmp_path / "junk.unet").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.unet"):
        Trainer.load(tmp_path / "junk.unet")
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        Trainer.load(tmp_path / "missing.unet")


def test_a_nan_loss_stops_training_with_advice(data):
    trainer, loader = make_trainer(data)
    real_loss = trainer.model.loss
    trainer.model.loss = lambda batch: real_loss(batch) * float("nan")
    with pytest.raises(TrainingError, match="learning rate"):
        trainer.fit(loader, epochs=1)


def test_language_model_trains_and_reports_perplexity():
    from unet.data import Dataset
    unet.manual_seed(0)
    texts = [np.array([4 + (i + j) % 5 for j in range(6)], np.int64) for i in range(40)]
    dataset = Dataset({"text": texts}, ("text",))
    model = LanguageModel(10, embedding_dim=8, hidden_size=16, dropout=0.0)
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=1e-2), progress=False)
    history = trainer.fit(DataLoader(dataset, 8, seed=0), DataLoader(dataset, 40, shuffle=False), epochs=3)
    assert history[-1]["valid_perplexity"] == pytest.approx(math.exp(history[-1]["valid_loss"]))
    assert history[-1]["valid_perplexity"] < history[0]["valid_perplexity"]


def test_constructor_and_scheduler_checks(data):
    trainer, _ = make_trainer(data)
    with pytest.raises(ValueError, match="clip"):
        Trainer(trainer.model, trainer.optimizer, clip=-1)
    with pytest.raises(TypeError, match="optimizer"):
        Trainer(trainer.model, object())
    with pytest.raises(ValueError, match="scheduler"):
        make_scheduler(trainer.optimizer, {"name": "bogus"})
    assert make_scheduler(trainer.optimizer, None) is None
    sched = make_scheduler(trainer.optimizer, {"name": "cosine", "total_iters": 10})
    assert sched.get_last_lr()[0] == trainer.optimizer.param_groups[0]["initial_lr"]
