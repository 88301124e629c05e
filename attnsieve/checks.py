"""Argument checks shared by every public boundary: each raises a named ValueError or TypeError.

Public entry points (`attnsieve.api`, a planner's ``plan``, `Layout` constructors, the config, the
cache) check their arguments once, here; inner helpers trust their callers. The kernels' own
entries that the benches call directly (`attnsieve.kernels.prefill.sparse_attention`,
`attnsieve.kernels.quant.quant_attention`) check again: a layout or buffer that does not fit
sends their programs outside the tensors.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any

import torch
from torch import Tensor

_building = threading.local()  # set while `checked_fields` builds its copy


def checked_fields(
    obj: Any, name: str, value: object, clears: str | None = None
) -> dict[str, object]:
    """The fields to set for ``obj.name = value`` on a built dataclass ``obj``, as its constructor
    would hold them: a copy is built with them (`dataclasses.replace`), so every check of the
    constructor runs, cross-field ones too, and converted values (a list kept as a tuple, a name
    made a policy) are returned. ``clears``: the field that ``name`` replaces (a budget's ratio),
    set to None beside it; ``value`` may then not be None. A public name that is neither a field
    nor an attribute of the class (a typo, another method's field) is a TypeError, as the
    constructor's unexpected keyword is. Just ``{name: value}`` for a private or class attribute,
    or while ``obj`` or such a copy is being built (its constructor's own assignments, which it
    checks itself)."""
    fields = getattr(obj, "__dataclass_fields__", ())
    if name not in fields:
        if not name.startswith("_") and not hasattr(type(obj), name):
            names = ", ".join(f.name for f in dataclasses.fields(obj))
            raise TypeError(f"{name}: {type(obj).__name__} has no such field; its fields: {names}")
        return {name: value}
    if name not in obj.__dict__ or getattr(_building, "on", False):
        return {name: value}
    check_not_frozen(obj, name)
    changes = {name: value}
    if clears is not None:
        if value is None:
            raise ValueError(f"{name}: expected a value, got None (set {clears} to replace it)")
        changes[clears] = None
    _building.on = True
    try:
        built = dataclasses.replace(obj, **changes)
    finally:
        _building.on = False
    return {field: getattr(built, field) for field in changes}


def freeze(obj: Any, reason: str) -> None:
    """Refuse every later field assignment on the built method ``obj``, giving ``reason`` (the
    methods an `AttentionConfig` built: its ``to_dict`` would not show a change)."""
    object.__setattr__(obj, "_frozen_by", reason)


def check_not_frozen(obj: Any, name: str) -> None:
    """Raise ValueError naming field ``name`` where `freeze` froze ``obj``."""
    reason = obj.__dict__.get("_frozen_by")
    if reason is not None:
        raise ValueError(f"{name}: {reason}")


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints: the number of ``b``-sized blocks covering ``a``."""
    return -(-a // b)


def check_int(name: str, value: object, minimum: int) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is an int >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def check_bool(name: str, value: object) -> None:
    """Raise TypeError naming ``name`` unless ``value`` is a bool (not a truthy stand-in)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")


def check_pow2(name: str, value: object, low: int, high: int) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a power of two in [low, high]."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not low <= value <= high
        or value & (value - 1)
    ):
        raise ValueError(f"{name}: expected a power of two in [{low}, {high}], got {value!r}")


def check_float(name: str, value: object, low: float, high: float) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}")


def check_fraction(name: str, value: object) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a real number in (0, 1]: a decode
    budget's share of each head's tokens (0 would read only the current page, as no budget)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(
            f"{name}: expected a fraction of each head's tokens in (0, 1], got {value!r}"
        )


def check_scale(scale: object, name: str = "scale") -> None:
    """``scale`` is None (1/sqrt(D) for a softmax scale) or a positive finite real number, on
    every backend."""
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{name}: expected a positive finite float or None, got {scale!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{name}: expected a positive finite float or None, got {scale!r}")


def check_tensor(
    name: str, t: object, dims: int, what: str, device: torch.device | None = None
) -> None:
    """A floating-point tensor with strided data (`check_storage`) and ``dims`` dims, described by
    ``what``, on ``device`` where given (the device of the tensors it is read with)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name}: expected {dims} dims {what}, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")
    check_storage(name, t)


def check_storage(name: str, t: Tensor) -> None:
    """A tensor with strided data: meta tensors have a shape and nothing to read, and sparse or
    other layouts have no strides to index."""
    if t.device.type == "meta":
        raise ValueError(f"{name}: meta tensors hold no data; expected a CPU or CUDA tensor")
    if t.layout != torch.strided:
        raise TypeError(f"{name}: expected a dense (strided) tensor, got layout {t.layout}")


def check_int32(name: str, t: object, dims: int, what: str) -> None:
    """An int32 tensor (an index table) with ``dims`` dims, described by ``what``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int32:
        raise TypeError(f"{name}: expected int32, got {t.dtype}")
    if t.dim() != dims:
        raise ValueError(f"{name}: expected {dims} dims {what}, got shape {tuple(t.shape)}")
    check_storage(name, t)


def check_index(name: str, t: object, shape: tuple[int, ...], dtype, device) -> None:
    """A tensor of exactly ``shape`` and ``dtype`` on ``device`` (an index table, or a field
    beside the tensor that sets its shape)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected {dtype}, got {t.dtype}")
    if tuple(t.shape) != shape or t.device != device:
        raise ValueError(
            f"{name}: expected shape {shape} on {device}, got {tuple(t.shape)} on {t.device}"
        )


def check_qk(q: Tensor, k: Tensor) -> None:
    """Raise unless q is (B, H_q, N, D) and k (B, H_kv, M, D) of one float dtype and device, with
    H_q a multiple of H_kv: the contract of every attention and planning entry point."""
    check_tensor("q", q, 4, "(batch, heads, seq, head_dim)")
    check_tensor("k", k, 4, "(batch, heads, seq, head_dim)")
    if q.dtype != k.dtype:
        raise TypeError(f"q, k: expected one dtype, got {q.dtype} and {k.dtype}")
    if q.device != k.device:
        raise ValueError(f"q, k: expected one device, got {q.device} and {k.device}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q, k: batch sizes differ ({q.shape[0]} vs {k.shape[0]})")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q, k: head_dim differs ({q.shape[-1]} vs {k.shape[-1]})")
    if q.shape[-1] == 0:
        raise ValueError(f"q, k: expected head_dim >= 1, got shape {tuple(q.shape)}")
    if k.shape[1] == 0 or q.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise ValueError(f"q, k: H_q={q.shape[1]} must be a positive multiple of H_kv={k.shape[1]}")


def check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """`check_qk` plus `check_v`."""
    check_qk(q, k)
    check_v(k, v)


def check_v(k: Tensor, v: Tensor) -> None:
    """v against a checked k: same shape, dtype and device."""
    if not isinstance(v, Tensor):
        raise TypeError(f"v: expected a torch.Tensor, got {type(v).__name__}")
    if v.dtype != k.dtype:
        raise TypeError(f"k, v: expected one dtype, got {k.dtype} and {v.dtype}")
    if v.device != k.device:
        raise ValueError(f"k, v: expected one device, got {k.device} and {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k, v: expected equal shapes, got {tuple(k.shape)} and {tuple(v.shape)}")


def check_out(out: object, like: Tensor, **reads: Tensor) -> None:
    """An ``out=`` buffer: a tensor of ``like``'s shape, dtype and device, writable in place (not
    requiring grad where grad is on, no inference tensor outside inference mode), any strides
    under which no two elements share memory (kernel programs would race on them; an expanded
    view fails), sharing no memory with the tensors the kernel ``reads`` (named as the caller's
    arguments: a kernel that overwrote its q could not be run again on the same arguments, as an
    autotuner does)."""
    if not isinstance(out, Tensor):
        raise TypeError(f"out: expected a torch.Tensor or None, got {type(out).__name__}")
    if out.shape != like.shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(
            f"out: expected shape {tuple(like.shape)}, {like.dtype} on {like.device}; got "
            f"{tuple(out.shape)}, {out.dtype} on {out.device}"
        )
    if out.requires_grad and torch.is_grad_enabled():  # the result is written into it in place
        raise ValueError("out: expected a buffer that does not require grad; pass out=None")
    if out.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError(
            "out: an inference tensor (made under torch.inference_mode()) is written only inside "
            "inference mode; pass another buffer or call inside it"
        )
    if _self_overlapping(out):
        raise ValueError(
            f"out: expected a buffer whose elements do not share memory, got strides "
            f"{out.stride()} for shape {tuple(out.shape)}"
        )
    for name, t in reads.items():
        if _share_memory(out, t):
            raise ValueError(f"out: expected a buffer apart from {name}, got one that overlaps it")


def _share_memory(a: Tensor, b: Tensor) -> bool:
    """Whether the byte ranges that ``a`` and ``b`` span in one storage intersect."""
    if a.numel() == 0 or b.numel() == 0:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    (a_lo, a_hi), (b_lo, b_hi) = _byte_range(a), _byte_range(b)
    return a_lo < b_hi and b_lo < a_hi


def _byte_range(t: Tensor) -> tuple[int, int]:
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def _self_overlapping(t: Tensor) -> bool:
    """Whether two elements of ``t`` may share memory: by stride, each dim must step past the
    whole extent of the smaller-strided dims (an expanded view, stride 0, fails)."""
    extent = 0
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape, strict=True) if sz > 1)
    for stride, size in dims:
        if stride <= extent:
            return True
        extent += stride * (size - 1)
    return False


def check_device(device: object) -> torch.device:
    """The device a cache or layout lives on, as a full `torch.device` ("cuda" -> "cuda:0":
    comparable): a CPU or an available accelerator (not meta: both hold data)."""
    if not isinstance(device, (str, torch.device, int)) or isinstance(device, bool):
        raise TypeError(f"device: expected a torch.device, str or int, got {device!r}")
    try:
        dev = torch.empty(0, device=device).device
    except (RuntimeError, AssertionError) as e:  # torch without CUDA asserts
        # CUDA's own words run to five lines of debugging advice after the first
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"device: expected an available device, got {device!r} ({reason})"
        ) from None
    if dev.type == "meta":
        raise ValueError("device: meta tensors hold no data; expected a CPU or CUDA device")
    return dev


def check_dtype(name: str, t: Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {dtypes}, got {t.dtype}")


def layer_keys(name: str, mapping: dict[Any, Any]) -> dict[int, Any]:
    """``mapping`` keyed by layer index: int >= 0 keys, or ASCII digit strings as JSON objects
    have them; two keys of one layer ("0" and "00", or 0 and "0") are an error, not a silent
    overwrite."""
    keyed: dict[int, Any] = {}
    first: dict[int, Any] = {}
    for key, value in mapping.items():
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            index = key
        elif isinstance(key, str) and key.isascii() and key.isdigit():
            index = int(key)
        else:
            raise ValueError(
                f"{name}: keys must be layer indices (int >= 0 or digit string), got {key!r}"
            )
        if index in keyed:
            raise ValueError(f"{name}: keys {first[index]!r} and {key!r} both name layer {index}")
        keyed[index], first[index] = value, key
    return keyed
