"""Triton kernels: one op (or a family of planning ops) a file, with its launchers and tile choice
(autotuned or tabled), beside its float32 twin."""

import functools
import os

import torch
from torch import Tensor

# Triton's interpreter (the CPU tests) runs the kernels on CPU tensors; it must be chosen before
# triton is first imported
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_triton_device(name: str, t: Tensor) -> None:
    """The launchers' one requirement beyond `attnsieve.api`'s checks: a tensor Triton can run."""
    if not t.is_cuda and not INTERPRET:
        raise ValueError(
            f"{name}: the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1), got {t.device}"
        )


def check_interpreter_dots(name: str, t: Tensor) -> None:
    """Triton's interpreter computes ``tl.dot`` on bfloat16 operands wrong (off by orders of
    magnitude, without an error): a kernel that dots its bfloat16 input refuses it there."""
    if INTERPRET and t.dtype == torch.bfloat16:
        raise ValueError(
            f"{name}: bfloat16 under Triton's interpreter (TRITON_INTERPRET=1) gives wrong dots; "
            "pass float16 there (float32 where the kernel takes it), or use backend='reference'"
        )


@functools.cache
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 4 for the interpreter (any small number)."""
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count
