"""torch.nn.utils's names: packed sequences (``nn.utils.rnn``) and gradient clipping
(``clip_grad_norm_``/``clip_grad_value_``, the ones of ``unet.optim``)."""
from ...optim.clip import clip_grad_norm_, clip_grad_value_
from . import rnn

__all__ = ["clip_grad_norm_", "clip_grad_value_", "rnn"]
