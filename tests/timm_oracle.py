"""Import timm (our independent reference for MixNets) in tests only.

Why the patch: PyPI's torchvision, beside the CPU torch 2.13.0 wheel these machines
use, registers a fake (meta) kernel for `torchvision::nms` at import time, an op whose
C++ library never loaded here; torch raises "operator torchvision::nms does not exist"
and `import timm` (which imports torchvision) fails. We make exactly that one
registration tolerant — a fake kernel for a missing torchvision op is dropped — and
leave every other registration untouched. timm never enters mixdeploy's runtime path.
"""

from __future__ import annotations

import functools

import torch.library

_original_register_fake = torch.library.register_fake


@functools.wraps(_original_register_fake)
def _tolerant_register_fake(op, *args, **kwargs):
    decorator = _original_register_fake(op, *args, **kwargs)
    if not (isinstance(op, str) and op.startswith("torchvision::")):
        return decorator

    def apply(fn):
        try:
            return decorator(fn)
        except RuntimeError as err:
            if "does not exist" not in str(err):
                raise
            return fn

    return apply if callable(decorator) else decorator


torch.library.register_fake = _tolerant_register_fake
try:
    import timm  # noqa: E402,F401
finally:
    torch.library.register_fake = _original_register_fake

__all__ = ["timm"]
