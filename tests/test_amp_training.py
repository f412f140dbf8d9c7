"""Mixed-precision training end to end: UNet.fit(amp=...), the Trainer with a GradScaler (exact
resume), and `unet train --amp`."""
import numpy as np
import pytest

import unet
from unet import amp, optim
from unet.cli import main, sine_delay_task
from unet.data import DataLoader, PairDataset, TextEncoder, dates_task
from unet.models import Seq2Seq, UNet
from unet.models.trainer import Trainer, read_checkpoint

TINY = ["--hidden", "16", "--embedding", "8", "--batch-size", "16", "--no-progress", "--examples", "200"]


def small_task(n=96, seed=0):
    return sine_delay_task(n, 12, 2, 0.05, np.random.default_rng(seed))


# ---------------------------------------------------------------- UNet.fit

@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_unet_fit_with_amp_ends_near_the_float32_run(mode):
    x, y = small_task()
    fp32 = UNet(hidden_size=16, seed=0).fit(x, y, epochs=6, batch_size=16, lr=1e-2, verbose=False)
    model = UNet(hidden_size=16, seed=0)
    mixed = model.fit(x, y, epochs=6, batch_size=16, lr=1e-2, verbose=False, amp=mode)
    assert mixed["loss"][-1] < 0.5 * mixed["loss"][0]
    assert mixed["loss"][-1] == pytest.approx(fp32["loss"][-1], rel=0.1)
    assert all(p.dtype == unet.float32 for p in model.parameters())
    assert (model.scaler is not None) == (mode == "fp16")
    assert amp.get_autocast_dtype() is None  # fit leaves no autocast behind


def test_unet_fp16_scaler_state_is_saved_and_continued(tmp_path):
    x, y = small_task(48)
    model = UNet(hidden_size=8, seed=0)
    model.fit(x, y, epochs=1, batch_size=16, verbose=False, amp="fp16")
    model.scaler.update(new_scale=1024.0)
    model.save(tmp_path / "ck")
    saved = model.scaler.state_dict()
    continued = model.fit(x, y, epochs=1, batch_size=16, verbose=False, amp="fp16")
    loaded = UNet.load(tmp_path / "ck")  # the RNG too, as it was at the save
    assert loaded.scaler.state_dict() == saved
    resumed = loaded.fit(x, y, epochs=1, batch_size=16, verbose=False, amp="fp16")
    assert continued == resumed
    assert loaded.scaler.state_dict() == model.scaler.state_dict()
    with pytest.raises(ValueError, match="amp: expected 'bf16'"):
        model.fit(x, y, epochs=1, verbose=False, amp="fp32")


# ---------------------------------------------------------------- Trainer

@pytest.fixture(scope="module")
def data():
    pairs = PairDataset.from_pairs(dates_task(120, seed=3))
    source, target = TextEncoder("char").fit(pairs.sources), TextEncoder("char").fit(pairs.targets)
    return pairs.encode(source, target), len(source), len(target)


def make_trainer(data, mode, scaler=None, epochs=2):
    dataset, sv, tv = data
    unet.manual_seed(0)
    model = Seq2Seq(sv, tv, embedding_dim=8, hidden_size=16, dropout=0.2)
    loader = DataLoader(dataset, 16, seed=0)
    opt = optim.AdamW(model.parameters(), lr=3e-3)
    spec = {"name": "warmup_cosine", "warmup_iters": 3, "total_iters": epochs * len(loader)}
    return Trainer(model, opt, spec, clip=1.0, progress=False, amp=mode, scaler=scaler), loader


def params(model):
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def test_trainer_fp16_resumes_exactly_with_its_scaler(data, tmp_path):
    # a scale so large that the first steps overflow (skipped, backed off), then quick growth
    def scaler():
        return amp.GradScaler(init_scale=2.0 ** 24, growth_interval=3)

    straight, loader = make_trainer(data, "fp16", scaler())
    scales = []
    step = straight.train_step
    straight.train_step = lambda batch: (step(batch), scales.append(straight.scaler.get_scale()))[0]
    straight.fit(loader, epochs=2)
    assert min(scales) < 2.0 ** 24 and len(set(scales)) > 2  # backed off and grew again

    path = tmp_path / "ck.unet"
    first, loader = make_trainer(data, "fp16", scaler())
    first.fit(loader, epochs=1, checkpoint=path)
    saved = read_checkpoint(path)
    assert saved["trainer"]["amp"] == "float16" and saved["scaler"] == first.scaler.state_dict()
    assert saved["scaler"]["growth_interval"] == 3
    unet.manual_seed(123)
    resumed = Trainer.load(path, progress=False)  # amp and the scaler come from the checkpoint
    assert resumed.amp == "float16" and resumed.scaler.state_dict() == first.scaler.state_dict()
    resumed.fit(DataLoader(data[0], 16, seed=0), epochs=2)
    a, b = params(straight.model), params(resumed.model)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()


def test_trainer_bf16_trains_without_a_scaler_and_near_float32(data):
    results = {}
    for mode in (None, "bf16"):
        trainer, loader = make_trainer(data, mode, epochs=3)
        trainer.fit(loader, epochs=3)
        results[mode] = trainer.history[-1]["train_loss"]
        assert not trainer.scaler.is_enabled()
        assert trainer.state_dict()["scaler"] == {}
    assert results["bf16"] == pytest.approx(results[None], rel=0.05)


def test_trainer_checks_its_amp_arguments(data):
    with pytest.raises(ValueError, match="amp: expected"):
        make_trainer(data, "int8")
    with pytest.raises(TypeError, match="scaler: expected a unet.amp.GradScaler"):
        make_trainer(data, "fp16", scaler="yes")


# ---------------------------------------------------------------- unet train --amp

@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_cli_trains_with_amp_and_resumes(mode, tmp_path, capsys):
    out = str(tmp_path / "run")
    code = main(["train", *TINY, "--epochs", "2", "--stop-after", "1", "--amp", mode, "--out", out])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert f"mixed precision {mode}" in stdout and "epoch 1/2" in stdout
    state = read_checkpoint(tmp_path / "run" / "checkpoint.unet")
    assert state["trainer"]["amp"] == {"bf16": "bfloat16", "fp16": "float16"}[mode]
    assert bool(state["scaler"]) == (mode == "fp16")
    code = main(["train", "--resume", "--out", out])
    stdout, stderr = capsys.readouterr()
    assert code == 0 and "epoch 2/2" in stdout, stderr
    code = main(["train", "--resume", "--amp", "bf16" if mode == "fp16" else "fp16", "--out", out])
    assert code == 2 and "--amp" in capsys.readouterr().err  # resuming keeps the run's precision


def test_cli_refuses_other_amp_values(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--amp", "fp32", "--out", str(tmp_path / "o")])
    assert stopped.value.code == 2 and "invalid choice" in capsys.readouterr().err
