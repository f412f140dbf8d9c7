"""Ready models built from unet's layers: ``UNet``, the high-level encoder-decoder."""
from .unet import UNet

__all__ = ["UNet"]
