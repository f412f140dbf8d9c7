"""CTC: unet.functional.ctc_loss / nn.CTCLoss against torch.nn.functional.ctc_loss (values, and
gradients through log_softmax of a leaf), the exact gradient by finite differences, the
binding's argument checks, and the decoders of unet.decoding on hand-made tables."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
import torch

import unet
import unet.functional as F
from gradcheck import gradcheck
from kernel_checks import FUZZ, MUTATIONS, assert_names, check_mutation, junk_arguments
from unet import _C, nn
from unet.decoding import ctc_greedy_decode, ctc_prefix_beam_search

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def random_case(rng, T=30, N=6, C=7, S=8, blank=0, min_input=1):
    """Logits (T, N, C), padded targets (labels != blank, with repeats), lengths that fit."""
    logits = rng.standard_normal((T, N, C))
    labels = [c for c in range(C) if c != blank]
    targets = rng.choice(labels, size=(N, S))
    targets[0, 1:3] = targets[0, 0]  # a run of repeats: each pair needs a blank between
    target_lengths = rng.integers(0, S + 1, N)
    target_lengths[0] = min(S, 4)
    input_lengths = np.array([rng.integers(max(min_input, 2 * tl + 1), T + 1) for tl in target_lengths])
    return logits, targets, input_lengths, target_lengths


def concatenate(targets, target_lengths):
    return np.concatenate([row[:n] for row, n in zip(targets, target_lengths)]).astype(np.int64)


def ours(logits, dtype, targets, input_lengths, target_lengths, **kw):
    """(loss, d loss / d logits) through log_softmax, weighted by a fixed vector for 'none'."""
    x = unet.tensor(logits.astype(dtype), requires_grad=True)
    loss = F.ctc_loss(F.log_softmax(x, dim=-1), targets, input_lengths, target_lengths, **kw)
    weight = np.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape) if loss.ndim else 1.0
    (loss * unet.tensor(np.asarray(weight, dtype))).sum().backward()
    return loss.numpy(), x.grad.numpy()


def theirs(logits, dtype, targets, input_lengths, target_lengths, **kw):
    x = torch.tensor(logits.astype(dtype), requires_grad=True)
    loss = torch.nn.functional.ctc_loss(x.log_softmax(-1), torch.as_tensor(targets),
                                        torch.as_tensor(input_lengths), torch.as_tensor(target_lengths), **kw)
    weight = np.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape) if loss.ndim else 1.0
    (loss * torch.as_tensor(np.asarray(weight, dtype))).sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torch(dtype, reduction, layout, seed):
    rng = np.random.default_rng(seed)
    logits, targets, input_lengths, target_lengths = random_case(rng, T=25 + seed * 10, N=5 + seed, C=4 + 3 * seed)
    if layout == "concatenated":
        targets = concatenate(targets, target_lengths)
    args = (logits, dtype, targets, input_lengths, target_lengths)
    loss, grad = ours(*args, reduction=reduction)
    ref_loss, ref_grad = theirs(*args, reduction=reduction)
    assert loss.dtype == dtype and loss.shape == ref_loss.shape
    np.testing.assert_allclose(loss, ref_loss, **TOL[dtype])
    np.testing.assert_allclose(grad, ref_grad, **TOL[dtype])


@pytest.mark.parametrize("blank", [2, 6])
def test_blank_not_zero(blank):
    rng = np.random.default_rng(3)
    logits, targets, input_lengths, target_lengths = random_case(rng, C=7, blank=blank)
    args = (logits, np.float64, targets, input_lengths, target_lengths)
    loss, grad = ours(*args, blank=blank, reduction="none")
    ref_loss, ref_grad = theirs(*args, blank=blank, reduction="none")
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_lengths_as_lists_arrays_and_tensors():
    rng = np.random.default_rng(4)
    logits, targets, input_lengths, target_lengths = random_case(rng)
    lp = F.log_softmax(unet.tensor(logits), dim=-1)
    ref = F.ctc_loss(lp, targets, input_lengths, target_lengths, reduction="none").numpy()
    for convert in (list, tuple, unet.tensor, lambda a: a.astype(np.int32)):
        loss = F.ctc_loss(lp, unet.tensor(targets), convert(input_lengths), convert(target_lengths),
                          reduction="none")
        np.testing.assert_array_equal(loss.numpy(), ref)


def test_repeated_label_needs_a_blank_between():
    """'aa' has exactly one alignment in 3 steps (a, blank, a) and none in 2."""
    rng = np.random.default_rng(5)
    lp = np.log(rng.dirichlet(np.ones(3), size=3))  # (T=3, C=3)
    loss = F.ctc_loss(unet.tensor(lp), [1, 1], 3, 2, reduction="none")
    assert loss.shape == ()
    np.testing.assert_allclose(loss.item(), -(lp[0, 1] + lp[1, 0] + lp[2, 1]), rtol=1e-12)
    assert math.isinf(F.ctc_loss(unet.tensor(lp[:2]), [1, 1], 2, 2, reduction="none").item())
    # 'ab' in 2 steps: the one alignment (a, b)
    ab = F.ctc_loss(unet.tensor(lp[:2]), [1, 2], 2, 2, reduction="none").item()
    np.testing.assert_allclose(ab, -(lp[0, 1] + lp[1, 2]), rtol=1e-12)


def test_brute_force_sum_over_alignments():
    """The loss is -log of the summed probability of every path that collapses to the target."""
    rng = np.random.default_rng(6)
    T, C, target = 5, 3, (1, 1, 2)
    lp = np.log(rng.dirichlet(np.ones(C), size=T))
    total = 0.0
    for path in np.ndindex(*(C,) * T):
        collapsed = [c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c)]
        if tuple(collapsed) == target:
            total += np.exp(sum(lp[t, c] for t, c in enumerate(path)))
    loss = F.ctc_loss(unet.tensor(lp), list(target), T, len(target), reduction="none").item()
    np.testing.assert_allclose(loss, -np.log(total), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_impossible_alignments(dtype):
    """Too few steps for the target: inf and NaN gradients as in torch, or 0 and zero gradients
    with zero_infinity; the possible sequences are unaffected."""
    rng = np.random.default_rng(7)
    logits, targets, input_lengths, target_lengths = random_case(rng, N=4)
    input_lengths[1], target_lengths[1], targets[1, :3] = 2, 3, [1, 2, 3]  # needs 3 steps
    input_lengths[2], target_lengths[2], targets[2, :2] = 3, 2, [4, 4]     # 'aa' needs 3: fits
    for zero_infinity in (False, True):
        args = (logits, dtype, targets, input_lengths, target_lengths)
        loss, grad = ours(*args, reduction="none", zero_infinity=zero_infinity)
        ref_loss, ref_grad = theirs(*args, reduction="none", zero_infinity=zero_infinity)
        np.testing.assert_allclose(loss, ref_loss, **TOL[dtype])
        assert loss[1] == (0 if zero_infinity else np.inf) and np.isfinite(loss[2])
        # the impossible sequence: NaN for its 2 steps (torch's), 0 after; zeros with zero_infinity
        if zero_infinity:
            assert (grad[:, 1] == 0).all()
        else:
            assert np.isnan(grad[:2, 1]).all() and (grad[2:, 1] == 0).all()
        keep = [0, 2, 3]
        np.testing.assert_allclose(grad[:, keep], ref_grad[:, keep], **TOL[dtype])
    for reduction in ("sum", "mean"):
        assert math.isinf(F.ctc_loss(unet.tensor(logits), targets, input_lengths, target_lengths,
                                     reduction=reduction).item())


def test_empty_targets_and_inputs():
    rng = np.random.default_rng(8)
    lp = np.log(rng.dirichlet(np.ones(4), size=(6, 3)))  # (T=6, N=3, C=4)
    # empty target: every step is the blank; no input steps: 0 for an empty target, else inf
    targets = np.array([[1, 2], [1, 2], [3, 3]])
    loss = F.ctc_loss(unet.tensor(lp), targets, [6, 0, 0], [0, 0, 1], reduction="none").numpy()
    np.testing.assert_allclose(loss[0], -lp[:, 0, 0].sum(), rtol=1e-12)
    assert loss[1] == 0 and loss[2] == np.inf
    ref = torch.nn.functional.ctc_loss(torch.tensor(lp), torch.tensor(targets), [6, 0, 0], [0, 0, 1],
                                       reduction="none").numpy()
    np.testing.assert_allclose(loss, ref, rtol=1e-12)
    # mean divides by max(target length, 1)
    mean = F.ctc_loss(unet.tensor(lp), targets, [6, 6, 6], [0, 2, 1], reduction="mean").item()
    per = F.ctc_loss(unet.tensor(lp), targets, [6, 6, 6], [0, 2, 1], reduction="none").numpy()
    np.testing.assert_allclose(mean, np.mean(per / [1, 2, 1]), rtol=1e-12)


def test_unbatched_equals_batch_of_one():
    rng = np.random.default_rng(9)
    logits, targets, input_lengths, target_lengths = random_case(rng, N=1)
    for reduction in ("none", "sum", "mean"):
        x = unet.tensor(logits[:, 0], requires_grad=True)
        loss = F.ctc_loss(F.log_softmax(x, dim=-1), targets[0], int(input_lengths[0]),
                          unet.tensor(target_lengths[0]), reduction=reduction)
        loss.backward()
        assert loss.shape == ()
        batched = F.ctc_loss(F.log_softmax(unet.tensor(logits), dim=-1), targets, input_lengths,
                             target_lengths, reduction=reduction)
        np.testing.assert_allclose(loss.item(), batched.numpy().reshape(-1)[0], rtol=1e-12)
        # torch wants exactly target_length labels unbatched; unet also takes a longer, padded row
        ref, ref_grad = theirs(logits[:, 0], np.float64, targets[0, :target_lengths[0]], input_lengths[:1],
                               target_lengths[:1],
                               reduction=reduction)
        np.testing.assert_allclose(loss.item(), ref, rtol=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), ref_grad, rtol=1e-10, atol=1e-12)


def test_nn_module():
    rng = np.random.default_rng(10)
    logits, targets, input_lengths, target_lengths = random_case(rng)
    lp = F.log_softmax(unet.tensor(logits), dim=-1)
    module = nn.CTCLoss(blank=0, reduction="sum", zero_infinity=True)
    assert repr(module) == "CTCLoss(blank=0, reduction='sum', zero_infinity=True)"
    np.testing.assert_array_equal(module(lp, targets, input_lengths, target_lengths).numpy(),
                                  F.ctc_loss(lp, targets, input_lengths, target_lengths, reduction="sum",
                                             zero_infinity=True).numpy())
    with pytest.raises(ValueError, match="blank"):
        nn.CTCLoss(blank=-1)
    with pytest.raises(ValueError, match="reduction"):
        nn.CTCLoss(reduction="avg")


def test_gradcheck_float64():
    """The exact gradient, straight on log_probs (not normalised: torch's formula would fail
    here) and through log_softmax."""
    rng = np.random.default_rng(11)
    logits, targets, input_lengths, target_lengths = random_case(rng, T=7, N=3, C=4, S=3)
    x = unet.tensor(logits, requires_grad=True)
    for reduction in ("none", "mean"):
        gradcheck(lambda x: F.ctc_loss(x, targets, input_lengths, target_lengths, reduction=reduction), [x])
        gradcheck(lambda x: F.ctc_loss(F.log_softmax(x, dim=-1), targets, input_lengths, target_lengths,
                                       reduction=reduction), [x])


def test_gradient_on_log_probs_differs_from_torch_by_softmax():
    """Documented: torch's gradient w.r.t. log_probs is ours plus exp(log_probs)."""
    rng = np.random.default_rng(12)
    logits, targets, input_lengths, target_lengths = random_case(rng, N=3)
    lp = torch.tensor(logits).log_softmax(-1).detach().requires_grad_()
    torch.nn.functional.ctc_loss(lp, torch.tensor(targets), torch.tensor(input_lengths),
                                 torch.tensor(target_lengths), reduction="sum").backward()
    x = unet.tensor(lp.detach().numpy(), requires_grad=True)
    F.ctc_loss(x, targets, input_lengths, target_lengths, reduction="sum").backward()
    valid = np.arange(logits.shape[0])[:, None] < input_lengths[None, :]
    expected = lp.grad.numpy() - np.exp(lp.detach().numpy()) * valid[..., None]
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_runs_in_float32(dtype):
    rng = np.random.default_rng(13)
    logits, targets, input_lengths, target_lengths = random_case(rng)
    x = unet.tensor(logits).to(dtype).requires_grad_()
    loss = F.ctc_loss(F.log_softmax(x.to("float32"), dim=-1).to(dtype), targets, input_lengths, target_lengths)
    loss.backward()
    assert loss.dtype == x.dtype and x.grad.dtype == x.dtype
    ref = F.ctc_loss(F.log_softmax(x.to("float32"), dim=-1), targets, input_lengths, target_lengths)
    np.testing.assert_allclose(float(loss.item()), ref.item(), rtol=2e-2)


def test_deterministic():
    rng = np.random.default_rng(14)
    logits, targets, input_lengths, target_lengths = random_case(rng, T=60, N=16, C=12, S=10)
    first = ours(logits, np.float32, targets, input_lengths, target_lengths, reduction="sum")
    for _ in range(3):
        again = ours(logits, np.float32, targets, input_lengths, target_lengths, reduction="sum")
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])


# ---------------------------------------------------------------- argument checks

def _valid():
    lp = unet.tensor(np.log(np.full((5, 2, 4), 0.25)))
    return lp, np.array([[1, 2, 3], [3, 1, 0]]), [5, 4], [3, 2]


@pytest.mark.parametrize("change, error, name, shown", [
    (dict(input_lengths=[6, 4]), ValueError, "input_lengths", "input_lengths[0] = 6"),
    (dict(input_lengths=[5, -1]), ValueError, "input_lengths", "input_lengths[1] = -1"),
    (dict(target_lengths=[4, 2]), ValueError, "target_lengths", "target_lengths[0] = 4"),
    (dict(target_lengths=[3, -2]), ValueError, "target_lengths", "target_lengths[1] = -2"),
    (dict(targets=np.array([[1, 2, 4], [3, 1, 0]])), IndexError, "targets", "targets[0, 2] = 4"),
    (dict(targets=np.array([[1, 2, 3], [-3, 1, 0]])), IndexError, "targets", "targets[1, 0] = -3"),
    (dict(targets=np.array([[1, 0, 3], [3, 1, 0]])), ValueError, "targets", "targets[0, 1] = 0"),
    (dict(targets=np.array([1, 2, 3, 3, 5]), target_lengths=[3, 2]), IndexError, "targets", "targets[4] = 5"),
    (dict(targets=np.array([1, 2, 3, 3]), target_lengths=[3, 2]), ValueError, "targets", "got 4"),
    (dict(targets=np.array([1, 2, 3, 3, 1, 1]), target_lengths=[3, 2]), ValueError, "targets", "got 6"),
    (dict(targets=np.array([[1, 2, 3]])), ValueError, "targets", "(1, 3)"),
    (dict(targets=np.ones((2, 2, 2), np.int64)), ValueError, "targets", "3-D"),
    (dict(targets=np.array([[1.0, 2, 3], [3, 1, 0]])), TypeError, "targets", "float64"),
    (dict(input_lengths=[5]), ValueError, "input_lengths", "(1,)"),
    (dict(target_lengths=[[3, 2]]), ValueError, "target_lengths", "(1, 2)"),
    (dict(input_lengths=[5.0, 4.0]), TypeError, "input_lengths", "float64"),
    (dict(blank=4), ValueError, "blank", "got 4"),
    (dict(blank=-1), ValueError, "blank", "got -1"),
    (dict(blank=1.0), TypeError, "blank", "float"),
    (dict(reduction="avg"), ValueError, "reduction", "avg"),
    (dict(zero_infinity=1), TypeError, "zero_infinity", "int"),
])
def test_bad_arguments(change, error, name, shown):
    lp, targets, input_lengths, target_lengths = _valid()
    args = dict(log_probs=lp, targets=targets, input_lengths=input_lengths, target_lengths=target_lengths)
    args.update(change)
    with pytest.raises(error) as excinfo:
        F.ctc_loss(**args)
    assert_names(excinfo, name)
    assert shown in str(excinfo.value)


def test_bad_log_probs():
    _, targets, input_lengths, target_lengths = _valid()
    with pytest.raises(TypeError, match="log_probs"):
        F.ctc_loss(np.zeros((5, 2, 4)), targets, input_lengths, target_lengths)
    with pytest.raises(TypeError, match="log_probs"):
        F.ctc_loss(unet.zeros(5, 2, 4, dtype="int64"), targets, input_lengths, target_lengths)
    with pytest.raises(ValueError, match="log_probs"):
        F.ctc_loss(unet.zeros(5, 2, 4, 1), targets, input_lengths, target_lengths)
    with pytest.raises(ValueError, match="targets"):  # unbatched takes (S,) targets
        F.ctc_loss(unet.zeros(5, 4), targets, 5, 3)


def _binding_args(dtype=np.float64):
    lp, targets, input_lengths, target_lengths = _valid()
    T, N, C = lp.shape
    return dict(log_probs=lp.numpy().astype(dtype), targets=targets, input_lengths=np.array(input_lengths),
                target_lengths=np.array(target_lengths), blank=0, zero_infinity=False,
                loss=np.zeros(N, dtype), grad=np.zeros((T, N, C), dtype),
                workspace=np.zeros((N, T + 2, 7), dtype))


@pytest.mark.parametrize("name", ["log_probs", "loss", "grad", "workspace"])
@pytest.mark.parametrize("mutation", [m for m in MUTATIONS if m not in ("other float",)])
def test_binding_rejects_bad_float_arrays(name, mutation):
    check_mutation(_C.ctc_loss, _binding_args(), name, mutation, np.random.default_rng(0))


def test_binding_checks():
    args = _binding_args()
    args["workspace"] = np.empty((2, 7, 5))  # rows hold targets up to S=2, a target is 3 long
    with pytest.raises(ValueError) as excinfo:
        _C.ctc_loss(**args)
    assert_names(excinfo, "workspace")
    args = _binding_args()
    args["workspace"] = np.empty((2, 7, 6))  # 2S+1 must be odd
    with pytest.raises(ValueError, match="workspace"):
        _C.ctc_loss(**args)
    args = _binding_args()
    args["loss"] = args["log_probs"].reshape(-1)[:2]  # overlaps an input
    with pytest.raises(ValueError, match="loss"):
        _C.ctc_loss(**args)
    args = _binding_args()
    args["grad"] = np.empty((5, 2, 4), np.float32)
    with pytest.raises(TypeError, match="grad"):
        _C.ctc_loss(**args)
    for name in ("targets", "input_lengths", "target_lengths"):
        args = _binding_args()
        args[name] = args[name].astype(np.int32)
        with pytest.raises(TypeError) as excinfo:
            _C.ctc_loss(**args)
        assert_names(excinfo, name)
    with pytest.raises(IndexError, match=r"targets\[0, 0\] = 9"):
        _C.ctc_check(np.array([[9]]), np.array([1]), np.array([1]), 1, 4, 0)
    _C.ctc_check(np.array([[1]]), np.array([1]), np.array([1]), 1, 4, 0)


@pytest.mark.fuzz
@FUZZ
@given(name=st.sampled_from(["log_probs", "loss", "grad", "workspace"]),
       mutation=st.sampled_from(sorted(m for m in MUTATIONS if m != "other float")), seed=st.integers(0, 2**16))
def test_binding_fuzz_rejects_bad_arrays(name, mutation, seed):
    check_mutation(_C.ctc_loss, _binding_args(), name, mutation, np.random.default_rng(seed))


@pytest.mark.fuzz
@FUZZ
@given(args=st.lists(junk_arguments(0, booleans=True), min_size=9, max_size=9),
       ints=st.lists(st.integers(-3, 5), min_size=3, max_size=3))
def test_binding_fuzz_never_crashes_on_junk(args, ints):
    for call in (lambda: _C.ctc_loss(*args[:5], False, *args[5:8]),
                 lambda: _C.ctc_check(*args[:3], *ints)):
        try:
            call()
        except (ValueError, TypeError, IndexError):
            pass


@pytest.mark.fuzz
@FUZZ
@given(T=st.integers(0, 6), N=st.integers(0, 3), C=st.integers(1, 5), S=st.integers(0, 4), blank=st.integers(-1, 5),
       data=st.data())
def test_binding_fuzz_near_valid_lengths_and_labels(T, N, C, S, blank, data):
    """Arbitrary lengths and labels: a result (finite or inf) or a named error, never a crash."""
    ints = st.integers(-2, 7)
    targets = np.array(data.draw(st.lists(st.lists(ints, min_size=S, max_size=S), min_size=N, max_size=N)),
                       np.int64).reshape(N, S)
    input_lengths = np.array(data.draw(st.lists(ints, min_size=N, max_size=N)), np.int64)
    target_lengths = np.array(data.draw(st.lists(ints, min_size=N, max_size=N)), np.int64)
    log_probs = np.log(np.full((T, N, C), 1.0 / C))
    outcomes = []
    for call in (lambda: _C.ctc_check(targets, input_lengths, target_lengths, T, C, blank),
                 lambda: _C.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, False,
                                     np.zeros(N), np.zeros((T, N, C)), np.zeros((N, T + 2, 2 * S + 1)))):
        try:
            call()
            outcomes.append("ok")
        except (ValueError, IndexError) as e:
            outcomes.append(type(e).__name__)
    assert outcomes[0] == outcomes[1]  # the CPU kernel checks exactly what ctc_check checks


# ---------------------------------------------------------------- decoding

def test_greedy_collapses_repeats_and_drops_blanks():
    # best path per step: a a _ a b b _ _ (then padding that input_lengths cuts off)
    path = [1, 1, 0, 1, 2, 2, 0, 0, 2, 2]
    table = np.full((len(path), 3), 0.1)
    table[np.arange(len(path)), path] = 0.8
    log_probs = np.log(np.stack([table, table[::-1]], axis=1))
    assert ctc_greedy_decode(log_probs, input_lengths=[8, 10]) == [[1, 1, 2], [2, 2, 1, 1]]
    assert ctc_greedy_decode(table) == [1, 1, 2, 2]  # unbatched, probabilities work too
    assert ctc_greedy_decode(unet.tensor(np.log(table[:0]))) == []
    assert ctc_greedy_decode(np.log(table), blank=2) == [1, 0, 1, 0]


def test_beam_search_finds_what_greedy_misses():
    """Two steps each 0.6 blank / 0.4 'a': the best path is blank-blank (0.36), the best
    labelling 'a' (0.4*0.4 + 0.4*0.6 + 0.6*0.4 = 0.64)."""
    table = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    assert ctc_greedy_decode(table) == []
    labels, score = ctc_prefix_beam_search(table, beam_width=4)
    assert labels == [1]
    np.testing.assert_allclose(score, np.log(0.64), rtol=1e-12)


def test_beam_search_scores_are_ctc_probabilities():
    """With a wide beam the score of the best labelling is exactly -ctc_loss of it, and no
    labelling has a higher probability (checked by brute force over short labellings)."""
    rng = np.random.default_rng(15)
    T, C = 6, 3
    lp = np.log(rng.dirichlet(np.full(C, 0.7), size=(T, 2)))
    sequences, scores = ctc_prefix_beam_search(lp, input_lengths=[6, 4], beam_width=64)
    for n, length in enumerate([6, 4]):
        nll = F.ctc_loss(unet.tensor(lp[:length, n]), sequences[n], length, len(sequences[n]),
                         reduction="none").item()
        np.testing.assert_allclose(scores[n], -nll, rtol=1e-10)
        best = max(-F.ctc_loss(unet.tensor(lp[:length, n]), list(cand), length, len(cand),
                               reduction="none").item()
                   for k in range(0, length + 1) for cand in np.ndindex(*(C - 1,) * k)
                   for cand in [tuple(c + 1 for c in cand)])
        np.testing.assert_allclose(scores[n], best, rtol=1e-10)


def test_decoder_arguments():
    table = np.log(np.full((3, 2, 4), 0.25))
    with pytest.raises(ValueError, match="blank"):
        ctc_greedy_decode(table, blank=4)
    with pytest.raises(ValueError, match="input_lengths"):
        ctc_greedy_decode(table, input_lengths=[4, 1])
    with pytest.raises(ValueError, match="input_lengths"):
        ctc_prefix_beam_search(table, input_lengths=[3])
    with pytest.raises(ValueError, match="beam_width"):
        ctc_prefix_beam_search(table, beam_width=0)
    with pytest.raises(ValueError, match="log_probs"):
        ctc_greedy_decode(np.zeros((3, 4), np.int64))
