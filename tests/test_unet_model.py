"""unet.models.UNet: the founding example, gradients, training loops, checkpoints, bad input."""
import numpy as np
import pytest

import unet
from unet import UNet, nn
from unet.cli import sine_delay_task


def small_task(examples=96, steps=12, seed=0):
    return sine_delay_task(examples, steps, delay=2, noise=0.1, rng=np.random.default_rng(seed))


def test_founding_example():
    import numpy as np
    from unet import UNet
    x = np.random.randn(10, 10)
    unet = UNet()
    y = unet.forward(x)
    unet.backward(y, np.random.randn(10, 10))


def test_founding_example_does_real_work():
    x, target = np.random.randn(10, 10), np.random.randn(10, 10)
    model = UNet()
    y = model.forward(x)
    assert isinstance(y, unet.Tensor) and y.shape == (10, 10) and y.dtype == unet.float32
    assert y.requires_grad
    loss = model.backward(y, target)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, np.mean((y.numpy().astype(np.float64) - target) ** 2), rtol=1e-5)
    params = dict(model.named_parameters())
    assert len(params) == 10  # 4 per LSTM (encoder, decoder) + read-out weight and bias
    for name, p in params.items():
        assert p.grad is not None and np.any(p.grad.numpy() != 0), name


def test_is_a_module_with_state_dict():
    model = UNet(input_size=3)
    assert isinstance(model, nn.Module) and unet.models.UNet is UNet
    keys = set(model.state_dict())
    assert {"encoder.weight_ih_l0", "decoder.weight_hh_l0", "readout.weight", "readout.bias"} <= keys


def test_lazy_build_infers_sizes():
    model = UNet(hidden_size=8)
    assert not model.built and list(model.parameters()) == []
    model.forward(np.zeros((5, 3)))
    assert model.built and (model.input_size, model.output_size) == (3, 3)
    assert model.readout.weight.shape == (3, 8)
    assert UNet(output_size=2).forward(np.zeros((5, 3))).shape == (5, 2)


def test_gradients_accumulate_until_zero_grad():
    model = UNet(hidden_size=4, seed=0)
    x, t = np.random.randn(6, 3), np.random.randn(6, 3)
    model.backward(model.forward(x), t)
    first = model.readout.weight.grad.numpy().copy()
    model.backward(model.forward(x), t)
    np.testing.assert_allclose(model.readout.weight.grad.numpy(), 2 * first, rtol=1e-5, atol=1e-7)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_gradients_match_finite_differences():
    model = UNet(hidden_size=3, dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))

    def loss_now():
        with unet.no_grad():
            return float(np.mean((model.forward(x).numpy() - target) ** 2))

    model.backward(model.forward(x), target)
    eps = 1e-6
    for name, p in model.named_parameters():
        for flat in rng.choice(p.numel(), size=min(3, p.numel()), replace=False):
            index = np.unravel_index(flat, p.shape)
            original = p.data[index]
            p.data[index] = original + eps
            up = loss_now()
            p.data[index] = original - eps
            down = loss_now()
            p.data[index] = original
            numeric = (up - down) / (2 * eps)
            assert p.grad.numpy()[index] == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, index)


def test_batch_matches_one_sequence_at_a_time():
    model = UNet(output_size=2, hidden_size=5, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((3, 7, 4))
    y = model.forward(x)
    assert y.shape == (3, 7, 2)
    for i in range(3):
        np.testing.assert_allclose(y.numpy()[i], model.forward(x[i]).numpy(), rtol=1e-12, atol=1e-12)


def test_fit_reduces_loss_and_predict():
    x, y = small_task()
    x_val, y_val = small_task(32, seed=1)
    model = UNet(hidden_size=16, seed=0)
    before = model.evaluate(x_val, y_val)
    history = model.fit(x, y, epochs=8, batch_size=16, lr=1e-2, validation_data=(x_val, y_val),
                        verbose=False)
    assert set(history) == {"loss", "val_loss"} and len(history["loss"]) == 8
    assert history["val_loss"][-1] < 0.5 * before
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    prediction = model.predict(x_val, batch_size=10)
    assert isinstance(prediction, np.ndarray) and prediction.shape == y_val.shape
    np.testing.assert_allclose(np.mean((prediction - y_val) ** 2), history["val_loss"][-1], rtol=1e-4)
    assert model.predict(x_val[0]).shape == y_val[0].shape
    assert model.training  # predict and evaluate leave the mode as they found it


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_fit_other_optimizers(optimizer):
    x, y = small_task(32)
    history = UNet(hidden_size=8, seed=0).fit(x, y, epochs=2, batch_size=8, lr=1e-2,
                                              optimizer=optimizer, verbose=False)
    assert np.all(np.isfinite(history["loss"]))


def test_fit_with_an_optimizer_instance():
    x, y = small_task(32)
    model = UNet(input_size=1, hidden_size=8, seed=0)
    opt = unet.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.fit(x, y, epochs=1, batch_size=8, optimizer=opt, verbose=False)
    assert model.optimizer is opt and opt.state


def test_save_load_gives_identical_predictions(tmp_path):
    x, y = small_task(32)
    model = UNet(hidden_size=8, seed=0)
    model.fit(x, y, epochs=1, batch_size=8, verbose=False)
    model.save(tmp_path / "model.safetensors")
    loaded = UNet.load(tmp_path / "model.safetensors")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_resume_continues_exactly(tmp_path):
    """Train 2 epochs, save, train 2 more; a model loaded from the save and trained 2 more ends the same."""
    x, y = small_task(48)
    model = UNet(hidden_size=8, dropout=0.2, seed=0)  # dropout and shuffling both draw random numbers
    model.fit(x, y, epochs=2, batch_size=16, verbose=False)
    model.save(tmp_path / "ckpt")
    uninterrupted = model.fit(x, y, epochs=2, batch_size=16, verbose=False)
    unet.manual_seed(123)  # whatever happened meanwhile, load restores the saved RNG state
    resumed_model = UNet.load(tmp_path / "ckpt")
    resumed = resumed_model.fit(x, y, epochs=2, batch_size=16, verbose=False)
    assert resumed == uninterrupted
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_seed_makes_models_reproducible():
    x = np.random.randn(5, 3)
    a, b = UNet(seed=7), UNet(seed=7)
    np.testing.assert_array_equal(a.forward(x).numpy(), b.forward(x).numpy())


def test_cross_entropy_bce_and_custom_losses():
    x = np.random.randn(6, 4)
    classes = np.array([0, 2, 1, 1, 0, 2])
    model = UNet(output_size=3, loss="cross_entropy", seed=0)
    logits = model.forward(x)
    assert logits.shape == (6, 3)
    logp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(-1, keepdims=True))
    loss = model.backward(logits, classes)
    assert loss == pytest.approx(-logp[np.arange(6), classes].mean(), rel=1e-5)
    with pytest.raises(TypeError, match="target"):
        model.backward(model.forward(x), classes.astype(np.float32))

    bce = UNet(loss="bce_with_logits", seed=0)
    labels = (np.random.rand(6, 4) > 0.5).astype(np.float64)
    z = bce.forward(x)
    p = 1 / (1 + np.exp(-z.numpy().astype(np.float64)))
    expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert bce.backward(z, labels) == pytest.approx(expected, rel=1e-5)

    l1 = UNet(loss=lambda out, target: (out - target).abs().mean(), seed=0)
    t = np.random.randn(6, 4)
    out = l1.forward(x)
    assert l1.backward(out, t) == pytest.approx(np.abs(out.numpy() - t).mean(), rel=1e-5)


def test_bad_inputs_name_the_argument():
    model = UNet(seed=0)
    with pytest.raises(ValueError, match="x"):
        model.forward(np.zeros((2, 3, 4, 5)))
    y = model.forward(np.zeros((10, 4)))
    with pytest.raises(ValueError, match="target"):
        model.backward(y, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="x"):
        model.forward(np.zeros((10, 5)))  # built for 4 features
    with pytest.raises(ValueError, match="output"):
        model.backward(UNet(seed=0).forward(np.zeros((10, 4))), np.zeros((10, 4)))
    with unet.no_grad():
        no_graph = model.forward(np.zeros((10, 4)))
    with pytest.raises(ValueError, match="output"):
        model.backward(no_graph, np.zeros((10, 4)))
    with pytest.raises(TypeError, match="x"):
        model.forward(np.array([["a"]]))
    with pytest.raises(ValueError, match="Y"):
        model.fit(np.zeros((4, 3, 4)), np.zeros((5, 3, 4)), verbose=False)
    with pytest.raises(ValueError, match="optimizer"):
        model.fit(np.zeros((4, 3, 4)), np.zeros((4, 3, 4)), optimizer="lbfgs", verbose=False)


@pytest.mark.parametrize("kwargs, name", [
    (dict(encoder="cnn", decoder="lstm"), "decoder"), (dict(encoder="bert"), "encoder"), (dict(decoder="cnn"), "decoder"),
    (dict(encoder="transformer"), "encoder"), (dict(hidden_size=0), "hidden_size"),
    (dict(num_layers=1.5), "num_layers"), (dict(dropout=1.0), "dropout"), (dict(loss="hinge"), "loss"),
    (dict(input_size=-1), "input_size"),
])
def test_bad_arguments_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        UNet(**kwargs)


def test_cnn_kind_pairs_only_with_itself():
    assert UNet(encoder="cnn").decoder_kind == "cnn" and UNet(encoder="gru").decoder_kind == "lstm"
    with pytest.raises(ValueError, match="decoder: a 'lstm' encoder needs a recurrent decoder"):
        UNet(decoder="cnn")


def test_fit_infers_output_size_from_targets():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 6, 3))
    model = UNet(hidden_size=8, seed=0)
    model.fit(X, rng.standard_normal((16, 6, 2)), epochs=1, verbose=False)
    assert model.predict(X[:2]).shape == (2, 6, 2)
    classifier = UNet(hidden_size=8, loss="cross_entropy", seed=0)
    classifier.fit(X, rng.integers(0, 5, (16, 6)), epochs=1, verbose=False)
    assert classifier.predict(X[:2]).shape == (2, 6, 5)


@pytest.mark.parametrize("encoder,decoder", [("gru", "gru"), ("rnn", "rnn"), ("gru", "lstm"), ("lstm", "gru")])
def test_other_recurrent_kinds_train(encoder, decoder):
    x, y = small_task(examples=48)
    model = UNet(hidden_size=12, encoder=encoder, decoder=decoder, seed=0)
    history = model.fit(x, y, epochs=8, batch_size=16, lr=1e-2, verbose=False)
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert isinstance(model.encoder, unet.nn.Module) and model.encoder_kind == encoder
