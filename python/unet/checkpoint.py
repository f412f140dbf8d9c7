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
import math
import os
import struct
import uuid

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as _serialize

from . import backend
from .tensor import Tensor

_STRUCTURE_KEY = "unet.structure"
_FORMAT_KEY = "unet.format"
_FORMAT_VERSION = "1"
_TAGS = ("__tensor__", "__ndarray__", "__npscalar__", "__tuple__", "__dict__")
# Bytes per element of each safetensors dtype; anything else in a header is refused.
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit


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
    _remove_orphans(directory, os.path.basename(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # Serialised in memory and written by us (safetensors' save_file would add a temporary
        # file of its own, which a killed process leaves behind under a name we cannot know).
        with open(tmp, "wb") as f:
            f.write(_serialize(arrays, metadata=metadata))
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
    _check_layout(path)
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


# ---------------------------------------------------------------- hostile files

def _check_layout(path: str) -> None:
    """Refuse a file whose safetensors header is malformed before any reader trusts it.

    safetensors checks most of this too, but its errors name neither the tensor nor
    the file, and it keeps the last of duplicate keys; here each fault is a ValueError
    that names both. Nothing in the file is ever executed: no pickle, only JSON and bytes.
    """
    def fail(what: str):
        raise ValueError(f"path: {path!r} is not a readable checkpoint (corrupt, truncated or not "
                         f"a safetensors file): {what}")

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            fail(f"{size} bytes, shorter than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, _MAX_HEADER_BYTES):
            fail(f"header length {header_len} exceeds the file ({size} bytes)")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as e:
        fail(f"header is not JSON: {e}")
    if not isinstance(header, dict):
        fail("header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        fail("header's __metadata__ is not an object of strings")
    data_len = size - 8 - header_len
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            fail(f"tensor {name!r}: expected dtype, shape and data_offsets, got {entry!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _ITEMSIZE:
            fail(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            fail(f"tensor {name!r}: shape {shape!r} is not a list of non-negative ints")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_len):
            fail(f"tensor {name!r}: data_offsets {offsets!r} outside the {data_len} data bytes")
        expected = math.prod(shape) * _ITEMSIZE[dtype]
        if offsets[1] - offsets[0] != expected:
            fail(f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for {dtype} of shape {shape} "
                 f"(expected {expected})")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    end, previous = 0, None
    for begin, stop, name in spans:
        if begin != end:
            fail(f"tensor {name!r}: starts at byte {begin}, expected {end} "
                 + (f"(overlaps {previous!r})" if begin < end else "(a gap)"))
        end, previous = stop, name
    if end != data_len:
        fail(f"{data_len - end} data bytes after the last tensor")


def _no_duplicate_keys(pairs):
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        duplicates = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
        raise ValueError(f"duplicate keys {duplicates}")
    return result


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

def _remove_orphans(directory: str, basename: str):
    """Delete the temporary files of earlier saves to this path whose process has died (killed mid-save)."""
    prefix = f".{basename}."
    for name in os.listdir(directory):
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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
