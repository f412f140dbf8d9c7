"""Export to ONNX: ``unet.onnx.export(model, example_inputs, path)`` traces the forward and writes
the graph (needs the ``onnx`` package: ``pip install 'unet[onnx]'``)."""
from .export import export

__all__ = ["export"]
