"""Triton kernels: one op (or a family of planning ops) a file, with its launchers and tile choice
(autotuned or tabled), beside its float32 twin."""

import functools
import os
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# Triton's interpreter (the CPU tests) runs the kernels on CPU tensors; it must be chosen before
# triton is first imported
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
LONG_CALL_MS = 20.0  # a tuning candidate this slow is timed by one call (`tune_timing`)


def check_triton_device(name: str, t: Tensor) -> None:
    """The launchers' one requirement beyond `attnsieve.api`'s checks: a tensor Triton can run."""
    if not t.is_cuda and not INTERPRET:
        raise ValueError(
            f"{name}: the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1), got {t.device}"
        )


def check_fp8_device(name: str, where: Tensor | torch.device) -> None:
    """FP8 e4m3 (Triton's fp8e4nv: the INT8·FP8 kernels, FP8 KV pages) compiles for compute
    capability 8.9 and later only; on an older GPU, a named error before any compile fails."""
    device = where.device if isinstance(where, Tensor) else where
    if device.type == "cuda" and not INTERPRET:
        major, minor = capability(device)
        if (major, minor) < (8, 9):
            raise ValueError(
                f"{name}: FP8 e4m3 needs a GPU of compute capability 8.9 or later (Ada, Hopper), "
                f"got {major}.{minor} ({device})"
            )


def check_interpreter_dots(name: str, t: Tensor) -> None:
    """Triton's interpreter computes ``tl.dot`` on bfloat16 operands wrong (off by orders of
    magnitude, without an error): a kernel that dots its bfloat16 input refuses it there."""
    if INTERPRET and t.dtype == torch.bfloat16:
        raise ValueError(
            f"{name}: bfloat16 under Triton's interpreter (TRITON_INTERPRET=1) gives wrong dots; "
            "pass float16 there (float32 where the kernel takes it), or use backend='reference'"
        )


def gluon_written_for(triton_version: str) -> bool:
    """Whether a Triton release is the one (3.6) whose Gluon API the sm_90 kernels
    (`quant_hopper`, `planning_hopper`) are written for. Gluon moves between releases (3.9 renamed
    TMA's copy to shared memory, older ones took other warp_specialize arguments): elsewhere the
    Triton kernels run."""
    return tuple(int(x) for x in triton_version.split(".")[:2]) == (3, 6)


def on_gluon_hopper(t: Tensor) -> bool:
    """Whether ``t`` lives on an sm_90 GPU that the Gluon kernels can run on (not under Triton's
    interpreter, which has no Gluon)."""
    return not INTERPRET and t.is_cuda and capability(t.device)[0] == 9


@functools.cache
def capability(device: torch.device) -> tuple[int, int]:
    """A CUDA device's compute capability, read once: the launchers ask on every call."""
    return torch.cuda.get_device_capability(device)


@functools.cache
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 4 for the interpreter (any small number)."""
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def call_ms(fn: Callable[[], object]) -> float:
    """One call of ``fn`` after a first (compile, autotune), in ms, from CUDA events."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def tune_timing(kernel_call: Callable[[], object], quantiles: Sequence[float]) -> list[float]:
    """The autotuners' timing (``triton.autotune(do_bench=...)``): triton.testing.do_bench's, but
    a candidate whose call takes `LONG_CALL_MS` is timed by one call after the one that compiles
    it. do_bench runs five calls to estimate, then warms up and repeats: at 1M tokens the first
    layer of `eval --fidelity` on SmolLM2 took 110 s against 6.5 s for each other layer (session
    38), about what four candidates of the dense kernel cost at seven calls of 3-4 s each, where
    one call each tells them apart. With this timing that first 1M call took 28.1 s, the second
    2.9 s (H200, session 39)."""
    ms = call_ms(kernel_call)
    if ms >= LONG_CALL_MS:
        return [ms] * len(quantiles)
    import triton.testing

    return triton.testing.do_bench(kernel_call, quantiles=list(quantiles))
