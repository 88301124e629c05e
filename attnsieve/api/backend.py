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


def check_forward_only(what: str, *tensors: Tensor) -> None:
    """``what`` computes no gradient: inputs that require one, with autograd on, would silently
    get none."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise ValueError(
            f"q: requires a gradient, but {what} is forward-only (it computes none): call it "
            "under torch.no_grad() or torch.inference_mode()"
        )
