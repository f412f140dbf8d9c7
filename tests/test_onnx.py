"""unet.onnx.export: every supported layer and two whole models, run by onnxruntime against unet's
own forward (float32, 1e-5 relative), the files accepted by onnx.checker; unsupported ops and bad
arguments refused with errors that name them."""
import numpy as np
import pytest

import unet
import unet.functional as F
from unet import nn
from unet.models import ImageCNN, LanguageModel, TextClassifier, TextCNN

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

RTOL, ATOL = 1e-5, 1e-6


def randn(*shape, seed=0):
    return unet.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def ids(*shape, high=20, seed=0):
    return unet.tensor(np.random.default_rng(seed).integers(0, high, shape), dtype="int64")


def run_onnx(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: t.numpy() for name, t in feeds.items()})


def unet_outputs(model, inputs):
    model.eval()
    with unet.no_grad():
        out = model(*inputs)
    flat = []

    def walk(v):
        if isinstance(v, (tuple, list)):
            for item in v:
                walk(item)
        else:
            flat.append(v.numpy())
    walk(out)
    return flat


def export_and_compare(model, inputs, tmp_path, **kwargs):
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    path = tmp_path / "model.onnx"
    unet.onnx.export(model, inputs, path, **kwargs)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    names = kwargs.get("input_names") or (["input"] if len(inputs) == 1 else
                                          [f"input_{i}" for i in range(len(inputs))])
    got = run_onnx(path, dict(zip(names, inputs)))
    want = unet_outputs(model, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    return path


class Chain(nn.Module):
    """A forward that is a plain chain of layers and functional ops."""

    def __init__(self, *layers, then=None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.then = then

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.then(x) if self.then else x


def trained_batch_norm(cls, channels, shape):
    """A BatchNorm with non-trivial running statistics, weight and bias."""
    bn = cls(channels)
    bn.train()
    for seed in range(3):
        bn(randn(*shape, seed=seed) * 2 + 1)
    bn.weight.data[...] = np.linspace(0.5, 1.5, channels, dtype=np.float32)
    bn.bias.data[...] = np.linspace(-0.2, 0.3, channels, dtype=np.float32)
    return bn


def last_output(rnn_out):
    return rnn_out[0]


LAYERS = {
    "linear_2d_gemm": lambda: (nn.Linear(5, 4), randn(3, 5)),
    "linear_3d_matmul_gelu": lambda: (nn.Linear(5, 4, activation="gelu"), randn(2, 3, 5)),
    "linear_no_bias_tanh": lambda: (nn.Linear(5, 4, bias=False, activation="tanh"), randn(3, 5)),
    "embedding": lambda: (nn.Embedding(20, 6, padding_idx=0), ids(3, 7)),
    "relu_tanh_sigmoid_gelu": lambda: (nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(),
                                                     nn.Sigmoid(), nn.GELU()), randn(3, 4)),
    "softmax": lambda: (nn.Sequential(nn.Linear(4, 6), nn.Softmax(dim=-1)), randn(3, 4)),
    "log_softmax": lambda: (nn.Sequential(nn.Linear(4, 6), nn.LogSoftmax(dim=1)), randn(3, 4)),
    "layer_norm": lambda: (nn.LayerNorm(6), randn(2, 3, 6)),
    "layer_norm_2d": lambda: (nn.LayerNorm((3, 6)), randn(2, 3, 6)),
    "batch_norm_1d": lambda: (trained_batch_norm(nn.BatchNorm1d, 4, (5, 4, 7)), randn(5, 4, 7, seed=9)),
    "batch_norm_2d": lambda: (trained_batch_norm(nn.BatchNorm2d, 3, (4, 3, 5, 5)), randn(4, 3, 5, 5, seed=9)),
    "dropout_is_identity": lambda: (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)), randn(3, 4)),
    "conv1d": lambda: (nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2), randn(2, 4, 11)),
    "conv1d_same_groups_relu": lambda: (nn.Conv1d(4, 6, 4, padding="same", groups=2, activation="relu"),
                                        randn(2, 4, 9)),
    "conv2d": lambda: (nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0)), randn(2, 3, 8, 7)),
    "conv2d_no_bias": lambda: (nn.Conv2d(3, 4, 3, padding="same", bias=False), randn(2, 3, 6, 6)),
    "conv_transpose1d": lambda: (nn.ConvTranspose1d(4, 3, 3, stride=2, padding=1, output_padding=1),
                                 randn(2, 4, 6)),
    "conv_transpose2d": lambda: (nn.ConvTranspose2d(4, 6, (3, 2), stride=2, groups=2), randn(2, 4, 5, 4)),
    "max_pool1d": lambda: (nn.MaxPool1d(3, stride=2, padding=1), randn(2, 3, 10)),
    "max_pool2d_ceil_dilation": lambda: (nn.MaxPool2d(2, stride=2, dilation=(1, 2), ceil_mode=True),
                                         randn(2, 3, 7, 9)),
    "avg_pool1d": lambda: (nn.AvgPool1d(3, stride=2), randn(2, 3, 10)),
    "avg_pool2d_padding_excluded_ceil": lambda: (nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                                              count_include_pad=False), randn(2, 3, 8, 8)),
    "layer_norm_no_affine": lambda: (nn.LayerNorm(6, elementwise_affine=False), randn(2, 3, 6)),
    "layer_norm_no_bias": lambda: (nn.LayerNorm(6, bias=False), randn(2, 3, 6)),
    "global_avg_pool": lambda: (nn.AdaptiveAvgPool2d(1), randn(2, 3, 5, 6)),
    "global_avg_pool1d_unbatched": lambda: (nn.AdaptiveAvgPool1d(1), randn(3, 7)),
    "adaptive_avg_pool2d": lambda: (nn.AdaptiveAvgPool2d((3, 2)), randn(2, 3, 7, 5)),
    "lstm": lambda: (nn.LSTM(5, 7), randn(6, 3, 5)),
    "lstm_stacked_bidirectional_batch_first": lambda: (
        nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True), randn(3, 6, 5)),
    "gru_stacked_bidirectional": lambda: (nn.GRU(5, 7, num_layers=2, bidirectional=True), randn(6, 3, 5)),
    "gru_batch_first_no_bias": lambda: (nn.GRU(5, 7, bias=False, batch_first=True), randn(3, 6, 5)),
    "rnn_tanh": lambda: (nn.RNN(5, 7, num_layers=2), randn(6, 3, 5)),
    "rnn_relu_bidirectional": lambda: (nn.RNN(5, 7, nonlinearity="relu", bidirectional=True), randn(6, 3, 5)),
    "sequential_in_module_list": lambda: (Chain(nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU()), nn.MaxPool1d(2),
                                                then=lambda x: F.log_softmax(x.flatten(1), dim=-1)),
                                          randn(2, 3, 9)),
}


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_layer_exports_and_matches_unet(case, tmp_path):
    unet.manual_seed(1)
    model, x = LAYERS[case]()
    export_and_compare(model, x, tmp_path)


@pytest.mark.parametrize("model, x, op", [
    (nn.LayerNorm((3, 6)), randn(2, 3, 6), "LayerNormalization"),
    (nn.AdaptiveAvgPool2d((1, 1)), randn(2, 3, 4, 4), "GlobalAveragePool"),
    (nn.Linear(3, 2), randn(4, 3), "Gemm"),
    (nn.GRU(3, 2), randn(4, 1, 3), "GRU"),
])
def test_layers_with_an_onnx_operator_become_that_operator(model, x, op, tmp_path):
    nodes = {n.op_type for n in onnx.load(str(export_and_compare(model, x, tmp_path))).graph.node}
    assert op in nodes, nodes
    assert not {"ReduceMean", "MatMul"} & nodes


class LSTMWithState(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 5, num_layers=2, bidirectional=True)

    def forward(self, x, h0, c0):
        return self.lstm(x, (h0, c0))


def test_recurrent_initial_state_is_a_graph_input(tmp_path):
    unet.manual_seed(2)
    inputs = (randn(6, 3, 4), randn(4, 3, 5, seed=1), randn(4, 3, 5, seed=2))
    export_and_compare(LSTMWithState(), inputs, tmp_path, input_names=["x", "h0", "c0"])


def test_lstm_gate_order_is_onnx_iofc(tmp_path):
    """The exported weights are torch's i,f,g,o rows regrouped as ONNX's i,o,f,c."""
    unet.manual_seed(3)
    lstm = nn.LSTM(2, 3)
    path = export_and_compare(lstm, randn(4, 1, 2), tmp_path)
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    w = weights[node.input[1]][0]
    i, f, g, o = np.split(lstm.weight_ih_l0.numpy(), 4)
    np.testing.assert_array_equal(w, np.concatenate([i, o, f, g]))


class LSTMTextClassifier(nn.Module):
    """Token ids (B, T) -> class log-probabilities: embedding, 2-layer bidirectional LSTM, the top
    layer's final states of both directions, a linear layer."""

    def __init__(self, vocab=30, dim=8, hidden=10, classes=3):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.encoder = nn.LSTM(dim, hidden, num_layers=2, bidirectional=True, batch_first=True, dropout=0.3)
        self.drop = nn.Dropout(0.3)
        self.output = nn.Linear(2 * hidden, classes)

    def forward(self, tokens):
        _, (h_n, _) = self.encoder(self.embedding(tokens))
        top = h_n[-2:].permute(1, 0, 2).reshape(tokens.shape[0], -1)
        return F.log_softmax(self.output(self.drop(top)), dim=-1)


def test_lstm_text_classifier_with_dynamic_batch_and_time(tmp_path):
    unet.manual_seed(4)
    model = LSTMTextClassifier()
    tokens = ids(4, 9, high=30)
    path = export_and_compare(model, tokens, tmp_path, input_names=["tokens"], output_names=["log_probs"],
                              dynamic_axes={"tokens": {0: "batch", 1: "time"}, "log_probs": [0]})
    other = ids(2, 13, high=30, seed=5)  # another batch size and length
    (got,) = run_onnx(path, {"tokens": other})
    np.testing.assert_allclose(got, unet_outputs(model, (other,))[0], rtol=RTOL, atol=ATOL)


def test_export_runs_in_eval_mode_and_restores_the_mode(tmp_path):
    """Dropout is the identity in the file, and the model is left training as it was."""
    model = LSTMTextClassifier()
    assert model.training
    path = tmp_path / "m.onnx"
    unet.onnx.export(model, ids(2, 5, high=30), path)
    assert model.training
    assert not {"Dropout", "RandomUniformLike"} & {n.op_type for n in onnx.load(str(path)).graph.node}


def test_image_cnn_with_dynamic_batch(tmp_path):
    unet.manual_seed(5)
    model = ImageCNN(in_channels=2, num_classes=4, channels=(6, 8), dropout=0.2)
    for block in model.features:  # running statistics away from (0, 1)
        if isinstance(block, nn.BatchNorm2d):
            block.running_mean.data[...] = 0.1
            block.running_var.data[...] = 1.7
    images = randn(3, 2, 9, 11)
    path = export_and_compare(model, images, tmp_path, dynamic_axes={"input": {0: "n"}, "output": {0: "n"}})
    other = randn(5, 2, 9, 11, seed=7)
    (got,) = run_onnx(path, {"input": other})
    np.testing.assert_allclose(got, unet_outputs(model, (other,))[0], rtol=RTOL, atol=ATOL)


def test_gelu_uses_the_onnx_op_from_opset_20(tmp_path):
    if onnx.defs.onnx_opset_version() < 20:
        pytest.skip("this onnx has no opset 20")
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    path = export_and_compare(model, randn(2, 4), tmp_path, opset=20)
    assert "Gelu" in {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("make", [
    lambda: TextClassifier(20, 3, pooling="last", num_layers=2),
    lambda: TextClassifier(20, 3, pooling="max", cell="gru"),
    lambda: TextClassifier(20, 3, pooling="mean"),
    lambda: TextCNN(20, 3),
    lambda: LanguageModel(20, num_layers=2),
], ids=["classifier_last", "classifier_max_gru", "classifier_mean", "text_cnn", "language_model"])
def test_ready_text_models_export_for_full_length_sequences(make, tmp_path):
    """Without lengths every sequence is full; the masks and lengths the models build in numpy
    become constants of the example's shape."""
    unet.manual_seed(6)
    export_and_compare(make(), ids(3, 7, high=20), tmp_path)


def test_constants_made_for_the_example_warn_under_dynamic_axes(tmp_path):
    model = TextClassifier(20, 3, pooling="mean")  # divides by lengths made in numpy
    with pytest.warns(UserWarning, match=r"constant of shape \(3, 1\).*\['batch'\]"):
        unet.onnx.export(model, ids(3, 7, high=20), tmp_path / "m.onnx", dynamic_axes={"input": {0: "batch"}})


def test_lstm_classifier_with_dynamic_axes_does_not_warn(tmp_path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unet.onnx.export(LSTMTextClassifier(), ids(4, 9, high=30), tmp_path / "m.onnx",
                         dynamic_axes={"input": [0, 1]})


# ---------------------------------------------------------------- refusals

class Variance(nn.Module):
    def forward(self, x):
        return x.var(dim=-1)


class ThroughNumpy(nn.Module):
    def forward(self, x):
        return unet.tensor(x.numpy() * 2) + 1.0


def test_unsupported_op_is_named(tmp_path):
    with pytest.raises(NotImplementedError, match="op Var .*no ONNX form"):
        unet.onnx.export(Variance(), randn(2, 3), tmp_path / "m.onnx")


@pytest.mark.parametrize("model, message", [
    (lambda: nn.LSTM(4, 6, proj_size=3), "proj_size"),
    (lambda: nn.Sequential(nn.MaxPool1d(2, return_indices=True)), "return_indices"),
])
def test_unsupported_layer_options_are_named(model, message, tmp_path):
    x = randn(5, 2, 4) if message == "proj_size" else randn(2, 3, 8)
    with pytest.raises(NotImplementedError, match=message):
        unet.onnx.export(model(), x, tmp_path / "m.onnx")


def test_recurrent_lengths_are_refused(tmp_path):
    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4)

        def forward(self, x):
            return self.rnn(x, lengths=[5, 2])[0]
    with pytest.raises(NotImplementedError, match="lengths"):
        unet.onnx.export(Padded(), randn(5, 2, 3), tmp_path / "m.onnx")


def test_input_that_leaves_the_traced_ops_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"example_inputs: \['input'\] never reach"):
        unet.onnx.export(ThroughNumpy(), randn(2, 3), tmp_path / "m.onnx")


def test_batch_norm_without_running_statistics_is_refused(tmp_path):
    bn = nn.BatchNorm1d(3, track_running_stats=False)
    with pytest.raises(NotImplementedError, match="batch statistics"):
        unet.onnx.export(bn, randn(4, 3), tmp_path / "m.onnx")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(opset=11), ValueError, "opset"),
    (dict(input_names=["a", "b"]), ValueError, "input_names"),
    (dict(output_names="y"), TypeError, "output_names"),
    (dict(dynamic_axes={"nope": [0]}), ValueError, "dynamic_axes: 'nope'"),
    (dict(dynamic_axes={"input": [5]}), ValueError, "axis 5 out of range"),
])
def test_bad_arguments(kwargs, error, message, tmp_path):
    with pytest.raises(error, match=message):
        unet.onnx.export(nn.Linear(3, 2), randn(2, 3), tmp_path / "m.onnx", **kwargs)


def test_bad_model_and_inputs(tmp_path):
    with pytest.raises(TypeError, match="model: expected a unet.nn.Module"):
        unet.onnx.export(lambda x: x, randn(2, 3), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="example_inputs"):
        unet.onnx.export(nn.Linear(3, 2), np.zeros((2, 3)), tmp_path / "m.onnx")


def test_trace_restores_function_apply(tmp_path):
    from unet.autograd import Function
    before = Function.__dict__["apply"]
    with pytest.raises(NotImplementedError):
        unet.onnx.export(Variance(), randn(2, 3), tmp_path / "m.onnx")
    assert Function.__dict__["apply"] is before
