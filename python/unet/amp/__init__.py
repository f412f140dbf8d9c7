"""Mixed precision: ``autocast`` (which precision each op runs in) and ``GradScaler`` (loss scaling).

    scaler = unet.amp.GradScaler(enabled=dtype == "fp16")   # bf16 needs no scaling
    with unet.amp.autocast(dtype):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()

16-bit products have one meaning everywhere: inputs rounded to float16/bfloat16, products
accumulated in float32, output in the asked dtype (see ``autocast``'s module docstring).
"""
from .autocast import (autocast, cast_for_fp32, cast_for_matmul, dtypes_mix, get_autocast_dtype,
                       is_autocast_enabled, resolve_half_dtype)
from .grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler", "get_autocast_dtype", "is_autocast_enabled", "cast_for_matmul",
           "cast_for_fp32", "dtypes_mix", "resolve_half_dtype"]
