"""Checkpoints: save and load any nested structure of tensors, arrays and plain values.

Layout: one safetensors file. Every Tensor and numpy array in the structure
becomes one safetensors entry, named by its place in the structure
(``model/encoder.weight_ih_l0``, ``optimizer/state/3/exp_avg``), so other
safetensors readers see the weights under readable names. Everything else —
the structure itself with references in place of the arrays, configs, step
counts, optimizer hyper-parameters, RNG state — is JSON kept in the file's
metadata header (key ``unet.structure``). One file, so one atomic rename.

Plain JSON cannot tell a tuple from a list or keep a dict's int keys, so a few
values are written as tagged objects with a single key:

    {"__tensor__": name}  {"__ndarray__": name}  {"__npscalar__": [dtype, value]}
    {"__tuple__": [...]}  {"__dict__": [[key, value], ...]}  (non-str keys)

and ``load`` gives back an equal structure: Tensors (on the CPU) where Tensors
were saved, numpy arrays where arrays were, tuples, int keys. bfloat16 arrays
go through ml_dtypes (imported by ``unet.backend``), which safetensors reads.

Nothing lost: the file is written under a temporary name in the same directory,
fsync'd and renamed over ``path`` with ``os.replace``; a run killed mid-save
leaves the previous checkpoint as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file as _write_tensors

from . import backend
from .tensor import Tensor

_STRUCTURE_KEY = "unet.structure"
_FORMAT_KEY = "unet.format"
_FORMAT_VERSION = "1"
_TAGS = ("__tensor__", "__ndarray__", "__npscalar__", "__tuple__", "__dict__")


def save(obj, path) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of Tensors, arrays, numbers, strings, None) to ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"path: directory {directory!r} of {path!r} does not exist")
    arrays = {}
    structure = _encode(obj, (), arrays)
    metadata = {_FORMAT_KEY: _FORMAT_VERSION,
                _STRUCTURE_KEY: json.dumps(structure, separators=(",", ":"))}
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _write_tensors(arrays, tmp, metadata=metadata)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt included: never leave the half-written file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def load(path):
    """Read a checkpoint written by ``save``; a plain safetensors file loads as ``{name: ndarray}``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no checkpoint file at {path!r}")
    try:
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
        structure = json.loads(metadata[_STRUCTURE_KEY]) if _STRUCTURE_KEY in metadata else None
    except (SafetensorError, ValueError) as e:  # json's errors are ValueErrors
        raise ValueError(f"path: {path!r} is not a readable checkpoint (corrupt or truncated?): {e}") from e
    if structure is None:
        return arrays
    if metadata.get(_FORMAT_KEY) != _FORMAT_VERSION:
        raise ValueError(f"path: {path!r} has checkpoint format {metadata.get(_FORMAT_KEY)!r}; "
                         f"this unet reads format {_FORMAT_VERSION!r}")
    try:
        return _decode(structure, arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"path: {path!r} has a damaged structure header: {e!r}") from e


# ---------------------------------------------------------------- structure <-> JSON

def _encode(value, where: tuple, arrays: dict):
    """JSON-able form of ``value``; arrays go into ``arrays`` under a name made from ``where``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):  # before int/float: np.float64 is a float subclass
        _check_dtype(value.dtype, where)
        return {"__npscalar__": [value.dtype.name, value.item()]}
    if isinstance(value, (int, float)):
        return value  # json writes inf/nan as Infinity/NaN and reads them back
    if isinstance(value, Tensor):
        return {"__tensor__": _store(backend.to_device(value.data, backend.Device("cpu")), where, arrays)}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _store(value, where, arrays)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, where + (i,), arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, where + (i,), arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in value):
            return {k: _encode(v, where + (k,), arrays) for k, v in value.items()}
        return {"__dict__": [[_encode_key(k, where), _encode(v, where + (k,), arrays)]
                             for k, v in value.items()]}
    raise TypeError(f"{_name(where)}: cannot save a {type(value).__name__}; expected Tensors, "
                    "numpy arrays, numbers, strings, None, or dicts/lists/tuples of them")


def _encode_key(key, where: tuple):
    arrays = {}
    encoded = _encode(key, where, arrays)
    if arrays:
        raise TypeError(f"{_name(where)}: a dict key holds an array; keys must be plain values")
    return encoded


def _name(where: tuple) -> str:
    """How an error names the offending entry: obj['model']['weight']."""
    return "obj" + "".join(f"[{k!r}]" for k in where)


def _check_dtype(dtype, where: tuple):
    if dtype.kind not in "biuf" and dtype != backend.bfloat16:  # ml_dtypes' bfloat16 has kind 'V'
        raise TypeError(f"{_name(where)}: cannot save dtype {dtype}; expected bool, int, float or bfloat16")


def _store(array: np.ndarray, where: tuple, arrays: dict) -> str:
    _check_dtype(array.dtype, where)
    base = "/".join(str(k) for k in where) or "tensor"
    name, n = base, 1
    while name in arrays:  # keys holding '/' could collide with a nested path
        n += 1
        name = f"{base}#{n}"
    # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
    arrays[name] = array if array.flags.c_contiguous else array.copy(order="C")
    return name


def _decode(value, arrays: dict):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)) in _TAGS:
        (tag, body), = value.items()
        if tag == "__tensor__":
            return Tensor._wrap(arrays[body])
        if tag == "__ndarray__":
            return arrays[body]
        if tag == "__npscalar__":
            dtype, item = body
            return np.dtype(dtype).type(item)
        if tag == "__tuple__":
            return tuple(_decode(v, arrays) for v in body)
        return {_decode(k, arrays): _decode(v, arrays) for k, v in body}
    return {k: _decode(v, arrays) for k, v in value.items()}


# ---------------------------------------------------------------- durability

def _fsync(path: str):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_directory(directory: str):
    """Make the rename itself durable (POSIX); Windows cannot open directories, and needs none."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
