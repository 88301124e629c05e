"""The backend of every public op: the argument, else $ATTNSIEVE_BACKEND, else auto."""

from __future__ import annotations

import os

import torch
from torch import Tensor

BACKENDS = ("auto", "triton", "reference")
HALF = (torch.float16, torch.bfloat16)
FLOAT = (*HALF, torch.float32)


def resolve_backend(backend: str | None, t: Tensor, dtypes: tuple[torch.dtype, ...] = HALF) -> str:
    """'triton' or 'reference' for ``t``: the argument, else $ATTNSIEVE_BACKEND, else auto
    (Triton for CUDA tensors of ``dtypes``)."""
    choice = backend if backend is not None else os.environ.get("ATTNSIEVE_BACKEND") or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {choice!r}")
    if choice == "auto":
        return "triton" if t.is_cuda and t.dtype in dtypes else "reference"
    return choice


def forward_only_error(backend: str, precision: str = "bf16", **tensors: Tensor) -> str | None:
    """The refusal of a call that computes no gradient (INT8 / FP8 rounding on either backend, or
    a kernel of the resolved ``backend`` "triton") given ``tensors`` (by name) of which some
    require one with autograd on: they would silently get none. None where the call may run."""
    wanting = [name for name, t in tensors.items() if t.requires_grad]
    if not wanting or not torch.is_grad_enabled():
        return None
    if precision == "int8-fp8":  # rounding to INT8 / FP8 has no useful gradient
        what = "int8-fp8 attention"
    elif backend == "triton":
        what = "the Triton backend (backend='reference' has gradients)"
    else:
        return None
    verb = "requires" if len(wanting) == 1 else "require"
    return (
        f"{', '.join(wanting)}: {verb} a gradient, but {what} is forward-only (it computes none): "
        "call it under torch.no_grad() or torch.inference_mode()"
    )


def check_forward_only(backend: str, precision: str = "bf16", **tensors: Tensor) -> None:
    """Raise `forward_only_error`'s refusal, if any, as a ValueError."""
    error = forward_only_error(backend, precision, **tensors)
    if error is not None:
        raise ValueError(error)
