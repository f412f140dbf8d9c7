"""unet._C.ctc_loss on CUDA arrays (csrc/cuda/ctc.cu) against the same call on numpy arrays
(the CPU kernel, itself tested against torch in test_ctc.py), and F.ctc_loss on GPU tensors.

Outputs and the workspace are poisoned with NaN before each call, so an element the kernel
fails to write shows up; calls run on a non-default stream.
"""
import numpy as np
import pytest

from kernel_checks import cupy  # noqa: F401  (a fixture)

import unet
import unet.functional as F
from unet import _C

pytestmark = pytest.mark.gpu

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def case(rng, T, N, C, S, layout, dtype):
    """log_probs, targets (padded or concatenated, with repeated labels), lengths; sequence 0
    cannot be aligned (its input is too short), the others can."""
    log_probs = np.log(rng.dirichlet(np.ones(C), size=(T, N))).astype(dtype)
    targets = rng.integers(1, C, (N, S))
    targets[:, 1::3] = targets[:, ::3][:, : targets[:, 1::3].shape[1]]  # repeats
    target_lengths = rng.integers(0, S + 1, N)
    input_lengths = np.array([rng.integers(min(2 * tl + 1, T), T + 1) for tl in target_lengths])
    target_lengths[0], input_lengths[0] = S, min(S - 1, T) if S > 1 else 0
    if layout == "concatenated":
        targets = np.concatenate([row[:n] for row, n in zip(targets, target_lengths)])
    return log_probs, targets.astype(np.int64), input_lengths, target_lengths


def run(xp, log_probs, targets, input_lengths, target_lengths, zero_infinity, stream=0):
    T, N, C = log_probs.shape
    S = int(max(target_lengths.max(initial=0), 0))
    dtype = log_probs.dtype
    loss = xp.full(N, np.nan, dtype)
    grad = xp.full((T, N, C), np.nan, dtype)
    workspace = xp.full((N, T + 2, 2 * S + 1), np.nan, dtype)
    arrays = [xp.asarray(a) for a in (log_probs, targets, input_lengths, target_lengths)]
    _C.ctc_loss(*arrays, 0, zero_infinity, loss, grad, workspace, stream)
    get = (lambda a: a.get()) if xp is not np else (lambda a: a)
    return get(loss), get(grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
@pytest.mark.parametrize("T, N, C, S", [(1, 1, 2, 1), (30, 7, 5, 6), (200, 33, 29, 40),
                                        (700, 3, 100, 300), (50, 130, 3, 10)])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_cuda_matches_cpu(cupy, dtype, layout, T, N, C, S, zero_infinity):
    rng = np.random.default_rng(T * N + C)
    args = case(rng, T, N, C, S, layout, dtype)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        loss, grad = run(cupy, *args, zero_infinity, stream.ptr)
    stream.synchronize()
    ref_loss, ref_grad = run(np, *args, zero_infinity)
    np.testing.assert_allclose(loss, ref_loss, **TOL[dtype])
    np.testing.assert_allclose(grad, ref_grad, **TOL[dtype])  # NaNs (impossible sequences) must match


def test_cuda_is_deterministic(cupy):
    args = case(np.random.default_rng(0), 300, 16, 40, 60, "padded", np.float32)
    first = run(cupy, *args, False)
    for _ in range(3):
        again = run(cupy, *args, False)
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])


def test_bad_device_indices_give_nan_not_a_bad_read(cupy):
    """The binding cannot read device index arrays; the kernel checks them itself."""
    log_probs, targets, input_lengths, target_lengths = case(np.random.default_rng(1), 10, 4, 5, 3,
                                                             "padded", np.float64)
    targets[1, 0] = 99                      # label out of range
    input_lengths[2] = 11                   # longer than T
    target_lengths[3] = 0                   # fine
    target_lengths[0], input_lengths[0] = 3, 10
    loss, grad = run(cupy, log_probs, targets, input_lengths, target_lengths, False)
    assert np.isnan(loss[1]) and np.isnan(loss[2]) and np.isfinite(loss[[0, 3]]).all()
    assert np.isnan(grad[:, 1]).all() and np.isfinite(grad[:, 3]).all()


def test_functional_on_gpu_tensors(cupy):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((40, 6, 12))
    targets = rng.integers(1, 12, (6, 8))
    input_lengths, target_lengths = rng.integers(20, 41, 6), rng.integers(1, 9, 6)
    results = []
    for device in ("cpu", "cuda"):
        x = unet.tensor(logits, device=device, requires_grad=True)
        loss = F.ctc_loss(F.log_softmax(x, dim=-1), targets, input_lengths, target_lengths)
        loss.backward()
        results.append((loss.item(), x.grad.to("cpu").numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)
    x = unet.tensor(logits, device="cuda")
    with pytest.raises(IndexError, match="targets"):  # checked on the host before the upload
        F.ctc_loss(x, np.full((6, 8), 12), input_lengths, target_lengths)
