"""The convolutional models: UNet(encoder="cnn"), TextCNN, ImageCNN and the digits example."""
import importlib.util
import math
import pathlib

import numpy as np
import pytest
import torch

import unet
from gradcheck import gradcheck
from unet import UNet, optim
from unet.data import pad_batch
from unet.models import ImageCNN, TextClassifier, TextCNN

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- UNet(encoder="cnn")

@pytest.mark.parametrize("upsampling", ["transpose", "linear", "nearest"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("steps", [1, 2, 7, 13, 16])
def test_cnn_unet_keeps_every_length(steps, num_layers, upsampling):
    model = UNet(input_size=3, output_size=2, hidden_size=4, num_layers=num_layers, encoder="cnn",
                 upsampling=upsampling, seed=0)
    x = np.random.default_rng(steps).standard_normal((5, steps, 3))
    assert model.forward(x).shape == (5, steps, 2)
    assert model.forward(x[0]).shape == (steps, 2)  # one unbatched sequence


def test_cnn_unet_runs_the_founding_example():
    x = np.random.randn(10, 10)
    model = UNet(encoder="cnn", seed=0)
    y = model.forward(x)
    loss = model.backward(y, np.random.randn(10, 10))
    assert y.shape == (10, 10) and math.isfinite(loss)
    assert (model.encoder_kind, model.decoder_kind) == ("cnn", "cnn")
    assert all(p.grad is not None for p in model.parameters())


def test_cnn_unet_levels_and_channels():
    model = UNet(input_size=3, hidden_size=4, num_layers=2, encoder="cnn", kernel_size=5, seed=0)
    assert [block[0].out_channels for block in model.encoder] == [4, 8, 16]
    assert [block[0].in_channels for block in model.decoder] == [16, 8]  # skip + up-sampled, concatenated
    assert model.encoder[0][0].kernel_size == (5,)
    assert "encoder.0.0.weight" in model.state_dict() and "up.1.weight" in model.state_dict()


def test_skip_connection_carries_the_gradient_to_the_first_level():
    model = UNet(input_size=2, hidden_size=4, num_layers=2, encoder="cnn", seed=0)
    x = unet.tensor(np.random.default_rng(0).standard_normal((3, 11, 2)), requires_grad=True)
    model.backward(model.forward(x), np.zeros((3, 11, 2)))
    first = model.decoder[-1][0].weight.grad.numpy()
    assert np.abs(first[:, :4]).sum() > 0  # the channels the level-0 skip feeds are read
    assert all(np.abs(p.grad.numpy()).sum() > 0 for p in model.encoder[0].parameters())
    # cut the way up from the deeper levels: the input still reaches the output, through the skip alone
    with unet.no_grad():
        for p in model.up[-1].parameters():
            p.fill_(0.0)
    x.grad = None
    model.zero_grad()
    y = model.forward(x)
    model.backward(y, np.zeros((3, 11, 2)))
    assert np.abs(x.grad.numpy()).sum() > 0
    assert all(np.abs(p.grad.numpy()).sum() == 0 for p in model.encoder[1].parameters())


def test_cnn_unet_gradients_match_finite_differences():
    model = UNet(input_size=2, output_size=2, hidden_size=3, num_layers=2, encoder="cnn", dtype="float64",
                 upsampling="linear", seed=3)
    x = unet.tensor(np.random.default_rng(1).standard_normal((2, 7, 2)), requires_grad=True)
    assert gradcheck(model.forward, [x])


def noisy_waves(examples, steps, rng):
    t = np.arange(steps)
    clean = np.sin(2 * np.pi * t / rng.uniform(8, 20, (examples, 1)) + rng.uniform(0, 2 * np.pi, (examples, 1)))
    noisy = clean + 0.4 * rng.standard_normal(clean.shape)
    return noisy[..., None].astype(np.float32), clean[..., None].astype(np.float32)


def test_cnn_unet_learns_to_denoise():
    rng = np.random.default_rng(0)
    x, y = noisy_waves(256, 33, rng)  # an odd length on purpose
    x_test, y_test = noisy_waves(64, 33, rng)
    model = UNet(hidden_size=16, num_layers=2, encoder="cnn", seed=0)
    history = model.fit(x, y, epochs=25, batch_size=32, lr=3e-3, verbose=False,
                        validation_data=(x_test, y_test))
    assert history["loss"][-1] < 0.25 * history["loss"][0]
    denoised = np.mean((model.predict(x_test) - y_test) ** 2)
    assert denoised < 0.3 * np.mean((x_test - y_test) ** 2)  # well below the noise it was given (0.16)


def test_cnn_unet_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, y = noisy_waves(32, 9, rng)
    model = UNet(hidden_size=4, num_layers=2, encoder="cnn", kernel_size=5, upsampling="nearest", dropout=0.1,
                 seed=0)
    model.fit(x, y, epochs=2, verbose=False)
    path = tmp_path / "cnn.unet"
    model.save(path)
    loaded = UNet.load(path)
    assert loaded.config == model.config and loaded.config["upsampling"] == "nearest"
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key].numpy(), value.numpy())
    assert type(loaded.optimizer) is type(model.optimizer)


@pytest.mark.parametrize("kwargs,match", [
    (dict(encoder="cnn", decoder="gru"), "decoder: a 'cnn' encoder needs a cnn decoder"),
    (dict(encoder="cnn", kernel_size=4), "kernel_size: expected a positive odd int"),
    (dict(encoder="cnn", kernel_size=0), "kernel_size"),
    (dict(encoder="cnn", upsampling="cubic"), "upsampling: expected one of"),
])
def test_cnn_unet_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


# ---------------------------------------------------------------- TextCNN

def test_text_cnn_matches_a_torch_twin():
    """Kim's pipeline written in torch on the same weights: max over the windows inside each text."""
    model = TextCNN(30, 3, embedding_dim=6, kernel_sizes=(2, 4), num_filters=5, dtype="float64")
    model.eval()
    rng = np.random.default_rng(0)
    lengths = np.array([7, 3, 1, 0, 5])
    ids = np.where(np.arange(7) < lengths[:, None], rng.integers(4, 30, (5, 7)), 0)
    weights = {k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()}
    x = weights["embedding.weight"][torch.from_numpy(np.pad(ids, ((0, 0), (0, 0))))].transpose(1, 2)
    pooled = []
    for i, k in enumerate((2, 4)):
        maps = torch.relu(torch.nn.functional.conv1d(x, weights[f"convs.{i}.weight"], weights[f"convs.{i}.bias"]))
        inside = torch.arange(maps.shape[-1])[None] < torch.from_numpy(np.maximum(lengths - k + 1, 1))[:, None]
        pooled.append(maps.masked_fill(~inside[:, None], -math.inf).amax(-1))
    expected = torch.cat(pooled, 1) @ weights["output.weight"].T + weights["output.bias"]
    with unet.no_grad():
        np.testing.assert_allclose(model(ids, lengths).numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
    # texts shorter than the widest kernel are padded up to it
    assert model(ids[:, :2], np.minimum(lengths, 2)).shape == (5, 3)


def sentiment_set(n, rng):
    """Texts of neutral words with sentiment words mixed in; the label is the majority sentiment."""
    positive, negative, neutral = range(4, 10), range(10, 16), range(16, 60)
    ids, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        strong = rng.choice(positive if label else negative, size=int(rng.integers(2, 4)))
        weak = rng.choice(negative if label else positive, size=int(rng.integers(0, 2)))
        text = np.concatenate([strong, weak, rng.choice(neutral, size=int(rng.integers(2, 12)))])
        ids.append(rng.permutation(text).astype(np.int64))
        labels.append(label)
    text, lengths = pad_batch(ids)
    return {"text": text, "text_lengths": lengths, "label": np.array(labels)}


def test_text_cnn_learns_toy_sentiment():
    rng = np.random.default_rng(0)
    unet.manual_seed(0)
    train, test = sentiment_set(400, rng), sentiment_set(200, rng)
    model = TextCNN(60, 2, embedding_dim=16, num_filters=16, dropout=0.3)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    before = model.evaluate_batch(test)["correct"] / 200
    for epoch in range(15):
        for start in range(0, 400, 32):
            batch = {k: v[start:start + 32] for k, v in train.items()}
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
    after = model.evaluate_batch(test)["correct"] / 200
    assert after >= 0.9 and after > before
    probs = model.predict_proba(test["text"], test["text_lengths"])
    assert probs.shape == (200, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_text_cnn_config_round_trip_and_shared_classifier_protocol():
    model = TextCNN(20, 4, embedding_dim=8, kernel_sizes=[3, 5], num_filters=6)
    cfg = model.config()
    assert cfg["kernel_sizes"] == [3, 5] and cfg["num_filters"] == 6
    twin = TextCNN.from_config(cfg)
    twin.load_state_dict(model.state_dict())
    ids, lengths = np.random.default_rng(0).integers(1, 20, (3, 6)), np.array([6, 4, 2])
    np.testing.assert_array_equal(twin.predict_proba(ids, lengths), model.predict_proba(ids, lengths))
    assert TextCNN.task == TextClassifier.task == "classify" and TextCNN.batch_keys == TextClassifier.batch_keys
    with pytest.raises(ValueError, match="label: class ids must lie in"):
        model.loss({"text": ids, "text_lengths": lengths, "label": np.array([0, 1, 9])})


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_sizes=()), "kernel_sizes: expected a non-empty list"),
    (dict(kernel_sizes=(3, 0)), "kernel_sizes: expected a positive int"),
    (dict(num_filters=0), "num_filters"),
    (dict(dropout=1.0), "dropout"),
])
def test_text_cnn_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TextCNN(10, 2, **kwargs)


# ---------------------------------------------------------------- ImageCNN

@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (2, 1, 28, 28), (3, 1, 5, 3), (1, 1, 1, 1)])
def test_image_cnn_shapes(shape):
    model = ImageCNN(in_channels=1, num_classes=7, channels=(4, 6, 8))
    images = np.random.default_rng(0).standard_normal(shape)
    model.eval()  # a batch of one image with one pixel has no batch statistics
    assert model(images).shape == (shape[0], 7)
    assert model.predict(images).shape == (shape[0],) and model.predict(images).dtype == np.int64


def test_image_cnn_trains_its_batch_norm_statistics_and_checks_input():
    model = ImageCNN(in_channels=3, num_classes=2, channels=(4,))
    images = np.random.default_rng(0).standard_normal((6, 3, 6, 6)) * 3 + 2
    model(images).sum().backward()
    bn = model.features[1]
    assert int(bn.num_batches_tracked.item()) == 1 and np.abs(bn.running_mean.numpy()).sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match=r"images: expected \(N, 3, H, W\)"):
        model(np.zeros((2, 1, 6, 6)))
    with pytest.raises(ValueError, match="channels"):
        ImageCNN(channels=())


def test_image_cnn_state_round_trips_through_a_checkpoint(tmp_path):
    model = ImageCNN(channels=(4, 8))
    model(np.random.default_rng(0).standard_normal((5, 1, 8, 8))).sum().backward()  # moves the BN statistics
    unet.save({"model": model.state_dict()}, tmp_path / "image.unet")
    twin = ImageCNN(channels=(4, 8))
    twin.load_state_dict(unet.load(tmp_path / "image.unet")["model"])
    assert int(twin.features[1].num_batches_tracked.item()) == 1
    images = np.random.default_rng(1).standard_normal((3, 1, 8, 8))
    np.testing.assert_array_equal(twin.predict_proba(images), model.predict_proba(images))


def test_digits_example_reaches_97_percent():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "examples" / "train_digits.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.train(progress=False) >= 0.97


# ---------------------------------------------------------------- `unet train --model textcnn`

def cli(capsys, monkeypatch, *argv, stdin=None):
    import io
    import sys

    from unet.cli import main

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_trains_resumes_and_predicts_with_text_cnn(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    good, bad, neutral = ["good", "great", "fine"], ["bad", "awful", "poor"], ["the", "film", "was", "very", "a"]
    lines = []
    for _ in range(120):
        label = int(rng.integers(2))
        words = list(rng.choice(good if label else bad, 2)) + list(rng.choice(neutral, int(rng.integers(1, 6))))
        lines.append(" ".join(rng.permutation(words)) + "\t" + ("pos" if label else "neg"))
    data = tmp_path / "reviews.tsv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    common = ["--task", "classify", "--model", "textcnn", "--data", str(data), "--out", str(out), "--embedding",
              "16", "--batch-size", "16", "--lr", "0.01", "--epochs", "4", "--no-progress"]
    code, stdout, stderr = cli(capsys, monkeypatch, "train", *common, "--stop-after", "2")
    assert code == 0, stderr
    assert "TextCNN (kernel sizes [3, 4, 5], 100 maps each, embedding 16)" in stdout
    code, stdout, stderr = cli(capsys, monkeypatch, "train", "--resume", "--out", str(out), "--no-progress")
    assert code == 0, stderr
    assert "resuming" in stdout and "epoch 4/4" in stdout
    accuracy = float(stdout.split("done: held-out accuracy ")[1].split("%")[0])
    assert accuracy >= 90
    code, stdout, stderr = cli(capsys, monkeypatch, "predict", "--checkpoint", str(out),
                               stdin="a great film\nawful , very poor\n")
    assert code == 0, stderr
    assert stdout.split() == ["pos", "neg"]


@pytest.mark.parametrize("argv,expected", [
    (["--task", "lm", "--data", "x", "--model", "textcnn"], "--model: only the classify task"),
    (["--task", "classify", "--data", "x", "--model", "textcnn", "--hidden", "8"], "--hidden: set the recurrent"),
])
def test_cli_model_option_mistakes_exit_2(argv, expected, tmp_path, capsys, monkeypatch):
    code, _, stderr = cli(capsys, monkeypatch, "train", *argv, "--out", str(tmp_path / "o"))
    assert code == 2 and expected in stderr
