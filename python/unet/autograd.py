"""Reverse-mode automatic differentiation.

Each differentiable op is a ``Function`` subclass: ``forward`` maps arrays to
arrays and may save what ``backward`` needs; ``backward`` maps the gradients of
the outputs to the gradients of the inputs. ``Function.apply`` runs forward on
the raw arrays and, when a gradient is wanted, links the outputs to the node.
``backward()`` sorts the reachable nodes topologically and walks them once.
"""
from __future__ import annotations

import contextlib
import threading
import weakref

from .backend import array_module, is_floating

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    previous = is_grad_enabled()
    _state.grad_enabled = enabled
    try:
        yield
    finally:
        _state.grad_enabled = previous


def no_grad():
    """Context manager (and decorator) under which no graph is recorded."""
    return _grad_mode(False)


def enable_grad():
    return _grad_mode(True)


class Function:
    """A node of the graph. Subclasses define ``forward(*arrays, **kw)`` and ``backward(*grads)``.

    Non-tensor positional arguments are passed through to ``forward`` as they
    are; ``backward`` returns one gradient (or None) per *tensor* argument.
    """

    def __init__(self):
        self.inputs = ()          # Tensor arguments, in order
        self.needs_input_grad = ()  # which of them want a gradient (backward may skip the rest)
        self.out_meta = ()        # (shape, dtype) of each output, to fill absent gradients
        self._saved = ()          # (tensor, version) pairs that backward reads
        self._freed = False
        self._retained = {}       # output index -> weakref of a tensor that retains its grad

    # Which tensors backward reads: an in-place change to one of them after the
    # forward pass would make the gradient wrong, so it is detected and refused.
    saves_inputs = True
    saves_outputs = False

    def _check_saved(self):
        if self._freed:
            raise RuntimeError(
                "Trying to backward through the graph a second time (or after its saved values were "
                "freed); pass retain_graph=True to the first backward() call")
        for t, version in self._saved:
            if t._version != version:
                raise RuntimeError(
                    f"a tensor of shape {t.shape} needed by {type(self).__name__}.backward was "
                    f"modified by an in-place operation (version {version} -> {t._version}); "
                    "gradients would be wrong")

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, *grads):
        raise NotImplementedError

    # ---- machinery
    @classmethod
    def apply(cls, *args, **kwargs):
        from .tensor import Tensor

        node = cls()
        tensors = tuple(a for a in args if isinstance(a, Tensor))
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        outputs = node.forward(*raw, **kwargs)
        single = not isinstance(outputs, tuple)
        if single:
            outputs = (outputs,)
        needs_grad = is_grad_enabled() and any(t.requires_grad for t in tensors)
        # only floating-point outputs carry gradients (x.long() of a leaf is a constant)
        results = tuple(Tensor._wrap(o, requires_grad=needs_grad and is_floating(o.dtype))
                        for o in outputs)
        for r in results:
            _share_version(r, tensors)
        if needs_grad:
            node.inputs = tensors
            node.needs_input_grad = tuple(t.requires_grad for t in tensors)
            node.out_meta = tuple((r.shape, r.dtype) for r in results)
            for index, r in enumerate(results):
                if r.requires_grad:
                    r._node, r._out_index = node, index
            saved = (tensors if cls.saves_inputs else ()) + (results if cls.saves_outputs else ())
            node._saved = tuple((t, t._version) for t in saved)
        return results[0] if single else results

    def _release(self):
        """Drop what forward saved (the arrays are the graph's memory); keep what the engine reads."""
        for name in [n for n in vars(self) if n not in _ENGINE_ATTRS]:
            delattr(self, name)
        self._saved = ()
        self._freed = True


_ENGINE_ATTRS = frozenset({"inputs", "needs_input_grad", "out_meta", "_saved", "_freed", "_retained"})


def _share_version(result, tensors):
    """A view of an input (reshape, slice, split ...) shares its version counter, so an in-place
    change made through either one is seen by backward as a change of both."""
    if result.data.base is None:  # a fresh array (most results): nothing to share
        return
    xp = array_module(result.data)
    for t in tensors:
        if array_module(t.data) is xp and xp.may_share_memory(result.data, t.data):
            result._version_box = t._version_box
            return


def _topological_order(root_node):
    """Nodes reachable from ``root_node``, each after every node that consumes it."""
    order, visited = [], set()
    stack = [(root_node, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for t in node.inputs:
            if t._node is not None and id(t._node) not in visited:
                stack.append((t._node, False))
    return order[::-1]


def _accumulate(existing, grad):
    return grad if existing is None else existing + grad


def queue_callback(callback):
    """Run ``callback()`` once the backward pass now running has finished (as torch's
    ``Variable._execution_engine.queue_callback``): DDP waits for its last all-reduce there."""
    callbacks = getattr(_state, "callbacks", None)
    if callbacks is None:
        raise RuntimeError("queue_callback: no backward pass is running (call it from a gradient hook)")
    callbacks.append(callback)


def run_backward(root, grad, retain_graph: bool = False):
    """Back-propagate ``grad`` (an array shaped like ``root``) into every leaf's ``.grad``, then run
    the callbacks queued meanwhile."""
    outer = getattr(_state, "callbacks", None)
    _state.callbacks = callbacks = []
    try:
        with no_grad():
            if root._node is None:
                root._accumulate_grad(grad)
                root._run_post_accumulate_grad_hooks()
            else:
                _walk(root, grad, retain_graph)
            for callback in callbacks:  # a callback may queue another: it runs too
                callback()
    finally:
        _state.callbacks = outer


def _walk(root, grad, retain_graph):
    order = _topological_order(root._node)
    # leaves with post-accumulate hooks: how many nodes still feed them; a hook runs when its
    # leaf's gradient is complete, i.e. after the last of those nodes
    uses = {}
    for node in order:
        for t in node.inputs:
            if t._node is None and t._post_accumulate_grad_hooks:
                uses[id(t)] = uses.get(id(t), 0) + 1
    received = set()
    pending = {id(root._node): [None] * len(root._node.out_meta)}
    pending[id(root._node)][root._out_index] = grad
    for node in order:
        grads = pending.pop(id(node), None)
        if grads is not None:
            _run_node(node, grads, pending, received, retain_graph)
        for t in node.inputs:
            if id(t) in uses:
                uses[id(t)] -= 1
                if uses[id(t)] == 0 and id(t) in received:
                    t._run_post_accumulate_grad_hooks()


def _run_node(node, grads, pending, received, retain_graph):
    node._check_saved()
    xp = array_module(next(g for g in grads if g is not None))
    grads = [xp.zeros(shape, dtype) if g is None else g
             for g, (shape, dtype) in zip(grads, node.out_meta)]
    for index, ref in node._retained.items():
        t = ref()
        if t is not None:
            t._accumulate_grad(grads[index])
    input_grads = node.backward(*grads)
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    if len(input_grads) != len(node.inputs):
        raise RuntimeError(f"{type(node).__name__}.backward returned {len(input_grads)} "
                           f"gradients for {len(node.inputs)} inputs")
    for t, g in zip(node.inputs, input_grads):
        if g is None or not t.requires_grad:
            continue
        if g.shape != t.shape:
            raise RuntimeError(f"{type(node).__name__}.backward produced a gradient of shape "
                               f"{g.shape} for an input of shape {t.shape}")
        if g.dtype != t.dtype:  # mixed-dtype ops: each input gets a gradient of its own dtype
            g = g.astype(t.dtype)
        if t._node is None:
            t._accumulate_grad(g)
            received.add(id(t))
        else:
            slot = pending.setdefault(id(t._node), [None] * len(t._node.out_meta))
            slot[t._out_index] = _accumulate(slot[t._out_index], g)
    if not retain_graph:
        node._release()


def retain(tensor):
    """Keep the gradient of a non-leaf tensor in ``.grad`` during backward."""
    tensor._node._retained[tensor._out_index] = weakref.ref(tensor)
