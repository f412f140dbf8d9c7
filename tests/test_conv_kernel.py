"""unet._C.conv_forward / conv_backward: values against float64 numpy (a direct sum over
the definition), and argument validation: every array argument spoilt every way, the
settings, aliasing, fake CUDA arrays and junk, always a named TypeError/ValueError."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import kernel_checks
from kernel_checks import FUZZ, FakeCudaArray, assert_names, junk_arguments, read_only
from unet import _C

SETTINGS = dict(stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2), groups=2)


def reference(x, w, b, stride, padding, dilation, groups):
    """conv + bias straight from the definition, in float64."""
    n, cin, h, wd = x.shape
    cout, cig, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), padding[:2], padding[2:]))
    ho = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, cout, ho, wo))
    cog = cout // groups
    for co in range(cout):
        grp = co // cog
        for ky in range(kh):
            for kx in range(kw):
                y0, x0 = ky * dilation[0], kx * dilation[1]
                patch = xp[:, grp * cig:(grp + 1) * cig, y0:y0 + stride[0] * (ho - 1) + 1:stride[0],
                           x0:x0 + stride[1] * (wo - 1) + 1:stride[1]]
                out[:, co] += np.einsum("nchw,c->nhw", patch, w[co, :, ky, kx].astype(np.float64))
        out[:, co] += b[co]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_forward_and_adjoint_match_the_definition(dtype, groups):
    rng = np.random.default_rng(groups)
    s = dict(SETTINGS, groups=groups)
    x = rng.standard_normal((2, 4, 9, 7)).astype(dtype)
    w = rng.standard_normal((8, 4 // groups, 3, 2)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    ref = reference(x, w, b, **s)
    out = np.empty(ref.shape, dtype)
    _C.conv_forward(x, w, b, out, None, "none", **s)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    # backward-data is the adjoint: <conv(x), g> = <x, conv^T(g)>, and the weight gradient
    # is the derivative of the same pairing in w
    g = rng.standard_normal(ref.shape).astype(dtype)
    gx, gw, gb = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    _C.conv_backward(g, x, w, None, "none", gx, gw, gb, **s)
    pairing = float(np.sum((ref - b[None, :, None, None]) * g))
    np.testing.assert_allclose(np.sum(x.astype(float) * gx), pairing, rtol=tol * 10)
    np.testing.assert_allclose(np.sum(w.astype(float) * gw), pairing, rtol=tol * 10)
    np.testing.assert_allclose(gb, g.astype(float).sum((0, 2, 3)), rtol=tol, atol=tol * 10)


# Kernels larger than 1 x 1 on images the direct kernel takes (csrc/cpu/conv_direct.cpp; also
# backward-data where the stride is 1) on every ISA: blocks that reach into the next row and
# past the last one, filters that do not fill a tile.
DIRECT_CASES = [
    ((2, 3, 20, 182), (10, 3, 3, 3), dict(stride=(2, 2), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)),
    ((1, 4, 12, 94), (6, 2, 3, 5), dict(stride=(1, 1), padding=(0, 2, 1, 3), dilation=(2, 1), groups=2)),
    ((2, 1, 21, 180), (9, 1, 5, 20), dict(stride=(2, 2), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)),
    ((1, 2, 5, 190), (3, 2, 2, 3), dict(stride=(1, 3), padding=(0, 0, 1, 1), dilation=(1, 1), groups=1)),
    ((2, 6, 9, 80), (4, 6, 3, 3), dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)),
    ((2, 5, 16, 14), (12, 5, 3, 3), dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)),
]


def reference_backward_data(g, w, x_shape, stride, padding, dilation, groups):
    """The adjoint of reference() in x, in float64."""
    n, cin, h, wd = x_shape
    cout, cig, kh, kw = w.shape
    gx = np.zeros((n, cin, h + padding[0] + padding[1], wd + padding[2] + padding[3]))
    ho, wo = g.shape[2:]
    cog = cout // groups
    for co in range(cout):
        grp = co // cog
        for ky in range(kh):
            for kx in range(kw):
                y0, x0 = ky * dilation[0], kx * dilation[1]
                gx[:, grp * cig:(grp + 1) * cig, y0:y0 + stride[0] * (ho - 1) + 1:stride[0],
                   x0:x0 + stride[1] * (wo - 1) + 1:stride[1]] += np.einsum(
                       "nhw,c->nchw", g[:, co].astype(np.float64), w[co, :, ky, kx].astype(np.float64))
    return gx[:, :, padding[0]:padding[0] + h, padding[2]:padding[2] + wd]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,s", DIRECT_CASES)
def test_wide_images_match_the_definition(xs, ws, s, dtype):
    rng = np.random.default_rng(len(xs) + ws[0])
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    ref = reference(x, w, b, **s)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    out = np.empty(ref.shape, dtype)
    _C.conv_forward(x, w, b, out, None, "none", **s)
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    out, preact = np.empty(ref.shape, dtype), np.empty(ref.shape, dtype)
    _C.conv_forward(x, w, b, out, preact, "relu", **s)
    np.testing.assert_allclose(preact, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(out, np.maximum(ref, 0), rtol=tol, atol=tol)
    # backward-data (as a convolution of g where the stride is 1)
    g = rng.standard_normal(ref.shape).astype(dtype)
    gx = np.empty_like(x)
    _C.conv_backward(g, x, w, None, "none", gx, None, None, **s)
    np.testing.assert_allclose(gx, reference_backward_data(g, w, x.shape, **s), rtol=tol, atol=tol)


def test_transposed_forward_needs_no_x():
    rng = np.random.default_rng(0)
    w, g = rng.standard_normal((6, 2, 3, 3)), rng.standard_normal((1, 6, 4, 6))
    gx = np.empty((1, 4, 9, 7))
    _C.conv_backward(g, None, w, None, "none", gx, None, None, **SETTINGS)
    full = np.empty_like(gx)
    _C.conv_backward(g, np.zeros_like(gx), w, None, "none", full, None, None, **SETTINGS)
    np.testing.assert_array_equal(gx, full)


def valid_forward(dtype=np.float64, act="relu"):
    return dict(x=np.ones((2, 4, 9, 7), dtype), weight=np.ones((8, 2, 3, 2), dtype), bias=np.ones(8, dtype),
                out=np.zeros((2, 8, 4, 8), dtype), preact=np.zeros((2, 8, 4, 8), dtype), activation=act,
                **SETTINGS)


def valid_backward(dtype=np.float64, act="relu"):
    return dict(grad_out=np.ones((2, 8, 4, 8), dtype), x=np.ones((2, 4, 9, 7), dtype),
                weight=np.ones((8, 2, 3, 2), dtype), preact=np.ones((2, 8, 4, 8), dtype), activation=act,
                grad_x=np.zeros((2, 4, 9, 7), dtype), grad_weight=np.zeros((8, 2, 3, 2), dtype),
                grad_bias=np.zeros(8, dtype), **SETTINGS)


def test_valid_arguments_run():
    _C.conv_forward(**valid_forward())
    _C.conv_backward(**valid_backward())


FWD_ARRAYS = ["x", "weight", "bias", "out", "preact"]
BWD_ARRAYS = ["grad_out", "x", "weight", "preact", "grad_x", "grad_weight", "grad_bias"]
# x and weight set the geometry: a grown dim of theirs may be another valid convolution, or
# show up as a mismatch of out / grad_out (see test_shapes_that_do_not_fit_are_named)
SHAPE_SETTERS = ("x", "weight")

@pytest.mark.fuzz
@FUZZ
@given(dtype=st.sampled_from([np.float32, np.float64]), name=st.sampled_from(FWD_ARRAYS),
       mutation=st.sampled_from(sorted(kernel_checks.MUTATIONS)), seed=st.integers(0, 2**16))
def test_forward_rejects_bad_arrays(dtype, name, mutation, seed):
    assume(not (mutation == "shape" and name in SHAPE_SETTERS))
    kernel_checks.check_mutation(_C.conv_forward, valid_forward(dtype), name, mutation, np.random.default_rng(seed))


@pytest.mark.fuzz
@FUZZ
@given(dtype=st.sampled_from([np.float32, np.float64]), name=st.sampled_from(BWD_ARRAYS),
       mutation=st.sampled_from(sorted(kernel_checks.MUTATIONS)), seed=st.integers(0, 2**16))
def test_backward_rejects_bad_arrays(dtype, name, mutation, seed):
    assume(not (mutation == "shape" and name in SHAPE_SETTERS))
    kernel_checks.check_mutation(_C.conv_backward, valid_backward(dtype), name, mutation,
                                 np.random.default_rng(seed))


@pytest.mark.parametrize("fn,valid,names", [(_C.conv_forward, valid_forward, ["out", "preact"]),
                                            (_C.conv_backward, valid_backward, ["grad_x", "grad_weight"])])
def test_read_only_outputs_are_rejected(fn, valid, names):
    for name in names:
        args = valid()
        args[name] = read_only(args[name])
        with pytest.raises(ValueError, match="writeable") as excinfo:
            fn(**args)
        assert_names(excinfo, name)


@pytest.mark.parametrize("name,bad,error", [
    ("stride", (0, 1), ValueError), ("stride", (1,), ValueError), ("stride", 1, TypeError),
    ("stride", (1.0, 1), TypeError), ("stride", (True, 1), TypeError), ("stride", (2**40, 1), ValueError),
    ("padding", (1, 1), ValueError), ("padding", (-1, 0, 0, 0), ValueError), ("padding", "same", TypeError),
    ("dilation", (1, 0), ValueError), ("dilation", None, TypeError),
    ("groups", 0, ValueError), ("groups", 3, ValueError), ("groups", 1.0, TypeError), ("groups", None, TypeError),
    ("activation", "swish", ValueError), ("activation", None, TypeError),
])
def test_settings_are_checked(name, bad, error):
    for fn, valid in [(_C.conv_forward, valid_forward), (_C.conv_backward, valid_backward)]:
        args = valid()
        args[name] = bad
        with pytest.raises(error) as excinfo:
            fn(**args)
        assert_names(excinfo, name)


def test_shapes_that_do_not_fit_are_named():
    args = valid_forward()
    args["weight"] = np.ones((8, 2, 30, 2))  # kernel taller than the padded input
    with pytest.raises(ValueError, match="larger than the padded input") as excinfo:
        _C.conv_forward(**args)
    assert_names(excinfo, "weight")
    args = valid_forward()
    args["weight"] = np.ones((8, 4, 3, 2))  # C_in/groups wrong
    with pytest.raises(ValueError) as excinfo:
        _C.conv_forward(**args)
    assert_names(excinfo, "weight")
    args = valid_forward()
    args["out"] = np.zeros((2, 8, 4, 7))
    with pytest.raises(ValueError, match="W_out=8") as excinfo:
        _C.conv_forward(**args)
    assert_names(excinfo, "out")


def test_none_only_where_allowed():
    args = valid_forward(act="none")
    args.update(bias=None, preact=None)
    _C.conv_forward(**args)
    for name in ["x", "weight", "out"]:
        args = valid_forward()
        args[name] = None
        with pytest.raises((TypeError, ValueError)) as excinfo:
            _C.conv_forward(**args)
        assert_names(excinfo, name)
    args = valid_forward()
    args["preact"] = None  # needed for relu
    with pytest.raises(ValueError) as excinfo:
        _C.conv_forward(**args)
    assert_names(excinfo, "preact")
    args = valid_backward()
    args["x"] = None  # needed for grad_weight
    with pytest.raises(ValueError) as excinfo:
        _C.conv_backward(**args)
    assert_names(excinfo, "x")
    args = valid_backward()
    args.update(x=None, grad_x=None, grad_weight=None)  # the input's shape comes from nowhere
    with pytest.raises(ValueError) as excinfo:
        _C.conv_backward(**args)
    assert_names(excinfo, "x")


def test_outputs_may_not_alias_inputs():
    args = valid_forward()
    args["preact"] = args["out"]
    with pytest.raises(ValueError, match="memory shared"):
        _C.conv_forward(**args)
    args = valid_backward()
    args["grad_x"] = args["x"]
    with pytest.raises(ValueError, match="memory shared") as excinfo:
        _C.conv_backward(**args)
    assert_names(excinfo, "grad_x")


def test_fake_cuda_arrays_are_refused():
    args = valid_forward()
    args["x"] = FakeCudaArray((2, 4, 9, 7), typestr="<f8")
    with pytest.raises(ValueError) as excinfo:
        _C.conv_forward(**args)
    assert_names(excinfo, "x")


_junk = junk_arguments(0)


@pytest.mark.fuzz
@FUZZ
@given(args=st.lists(_junk, min_size=8, max_size=8), ints=st.lists(st.integers(-2, 3), min_size=9, max_size=9),
       act=st.sampled_from(["none", "relu", "bogus", None]))
def test_never_crashes_on_junk(args, ints, act):
    stride, padding, dilation, groups = tuple(ints[:2]), tuple(ints[2:6]), tuple(ints[6:8]), ints[8]
    calls = [(_C.conv_forward, args[:5] + [act, stride, padding, dilation, groups]),
             (_C.conv_backward, args[:4] + [act] + args[4:7] + [stride, padding, dilation, groups])]
    for fn, call in calls:
        try:
            fn(*call)
        except (ValueError, TypeError):
            pass
