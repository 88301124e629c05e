"""Synthetic Q/K/V with the attention structure of real LLM heads planted, plus the ground truth.

Heads of long-context LLMs fall into a few kinds (StreamingLLM arXiv 2309.17453, MInference arXiv
2407.02490): attention sinks with a local band, vertical lines (a few key positions that most
queries read), slash lines (keys at fixed offsets from the query), retrieval of a contiguous span,
and diffuse heads. `make_workload` plants one kind per query head and returns what it planted, so
tests can check that a planner finds it. Generation is O(N·D) per head (no N×N tensor), vectorised,
seeded and on any device: N = 128K takes well under a second on a GPU.

Construction (before a random rotation shared by the queries and keys of a KV group, which keeps
every dot product): the first coordinates of each key are one-hot *special* directions (one for the
sinks, one per planted column, one per retrieval span), so the queries that target them score
exactly 1/temperature nats on those keys and 0 on the others. The rest of each key is two
position codes: a smooth code ``y`` (box-filtered white noise, so y_i·y_j ≈ max(0, 1 - |i - j| / w),
a recency bias like RoPE's) and a white code ``z`` (z_i·z_j ≈ [i = j]). A planted match scores
1/temperature nats; codes of unrelated positions add noise of std ≈ (1/temperature)/sqrt(D/2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

KINDS = ("sink_local", "vertical", "slash", "retrieval", "diffuse")
_ALIASES = {"block": "retrieval"}
# Slash and retrieval queries also match the sinks at half strength, as real heads do: rows that see
# no planted key yet (early queries) then rest on the sinks instead of spreading over noise.
_FALLBACK_SINK = 0.5


@dataclass(frozen=True)
class Workload:
    """Tensors and planted ground truth of `make_workload`.

    ``q`` (B, H_q, N, D), ``k``/``v`` (B, H_kv, N, D); ``head_kinds[h]`` is query head h's kind.
    Structure planted on the key side is shared by the query heads of its KV group:
    ``columns`` long (B, H_kv, C) sorted vertical-line key positions (read by "vertical" heads,
    which also read the ``num_sinks`` sink keys); ``spans`` long (B, H_kv, S, 2) [start, stop) key
    ranges read by "retrieval" heads. ``offsets`` long (H_q, O): query i of a "slash" head h reads
    keys i - offsets[h] (drawn for every head, used by slash heads only). "sink_local" heads read
    the sinks and the ``local_window`` most recent keys. Slash and retrieval heads score the sinks
    at half the planted logit, so rows that see none of their planted keys rest on the sinks.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    head_kinds: tuple[str, ...]
    num_sinks: int
    local_window: int
    columns: Tensor
    offsets: Tensor
    spans: Tensor
    temperature: float

    def heads_of(self, kind: str) -> list[int]:
        """Query heads of ``kind``."""
        kind = canonical_kind(kind, "kind")
        return [h for h, hk in enumerate(self.head_kinds) if hk == kind]


def canonical_kind(kind: str, name: str) -> str:
    """``kind`` with its alias resolved ('block' is 'retrieval'); a ValueError naming the
    argument ``name`` unless it is one of KINDS."""
    kind = _ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in KINDS:
        raise ValueError(f"{name}: unknown kind {kind!r}; expected one of {KINDS} or 'block'")
    return kind


NUM_SINKS, NUM_COLUMNS, SPAN_LEN = 4, 8, 64  # make_workload's defaults, which min_seq_len reads


def make_workload(
    head_kinds: Sequence[str] = KINDS,
    *,
    batch: int = 1,
    num_kv_heads: int | None = None,
    seq_len: int = 1024,
    head_dim: int = 128,
    num_sinks: int = NUM_SINKS,
    local_window: int = 64,
    num_columns: int = NUM_COLUMNS,
    num_offsets: int = 2,
    num_spans: int = 2,
    span_len: int = SPAN_LEN,
    temperature: float = 0.05,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Workload:
    """Q/K/V whose query heads show the planted ``head_kinds`` ("block" is an alias of "retrieval").

    ``temperature``: a planted match scores 1/temperature nats above an unrelated key (0.05 gives
    20, sharp like real heads). The same seed on the same device gives the same tensors.
    """
    if not head_kinds:
        raise ValueError("head_kinds: expected at least one head")
    kinds = tuple(canonical_kind(kind, "head_kinds") for kind in head_kinds)
    h_q = len(kinds)
    h_kv = h_q if num_kv_heads is None else num_kv_heads
    n, d = seq_len, head_dim
    sizes = {
        "batch": (batch, 1),
        "num_kv_heads": (h_kv, 1),
        "seq_len": (n, 2),
        "head_dim": (d, 4),
        "num_sinks": (num_sinks, 0),
        "local_window": (local_window, 1),
        "num_columns": (num_columns, 0),
        "num_offsets": (num_offsets, 0),
        "num_spans": (num_spans, 0),
        "span_len": (span_len, 1),
    }
    _check(kinds, sizes, temperature)
    gen = torch.Generator(device=device).manual_seed(seed)
    opts = {"device": device, "generator": gen}
    n_special = 1 + num_columns + num_spans
    d_y = (d - n_special) // 2
    d_z = d - n_special - d_y

    # Key side, per (batch, KV head): special one-hot directions, then the y and z position codes.
    k = torch.zeros(batch, h_kv, n, d, device=device)
    k[:, :, :num_sinks, 0] = 1.0
    columns = torch.rand(batch, h_kv, n - num_sinks, **opts).topk(num_columns, -1).indices
    columns = (columns + num_sinks).sort(-1).values
    b_idx = torch.arange(batch, device=device)[:, None, None]
    h_idx = torch.arange(h_kv, device=device)[None, :, None]
    k[b_idx, h_idx, columns, 1 + torch.arange(num_columns, device=device)] = 1.0
    start = torch.randint(num_sinks, n - span_len + 1, (batch, h_kv, num_spans), **opts)
    spans = torch.stack([start, start + span_len], -1)
    pos = torch.arange(n, device=device)
    in_span = (pos >= start[..., None]) & (pos < start[..., None] + span_len)  # (B, H_kv, S, N)
    k[..., 1 + num_columns : n_special] = in_span.transpose(-1, -2).float()
    white = torch.randn(batch, h_kv, n + local_window, d_y, **opts) / math.sqrt(d_y)
    summed = torch.nn.functional.pad(white.cumsum(2), (0, 0, 1, 0))
    y = (summed[:, :, local_window + 1 :] - summed[:, :, 1 : n + 1]) / math.sqrt(local_window)
    z = torch.randn(batch, h_kv, n, d_z, **opts)
    z = z / z.norm(dim=-1, keepdim=True)  # unit codes: a match scores exactly 1/temperature
    k[..., n_special : n_special + d_y] = y
    k[..., n_special + d_y :] = z
    k[:, :, :num_sinks, n_special:] = 0.0  # sink keys are pure sink: they score exactly as planted

    # Query side: each head targets the structure of its kind in its KV head's keys.
    offsets = torch.stack(
        [torch.randperm(max(n // 2, num_offsets), **opts)[:num_offsets] + 1 for _ in range(h_q)]
    )
    q = torch.zeros(batch, h_q, n, d, device=device)
    for h, kind in enumerate(kinds):
        kv = h // (h_q // h_kv)
        if kind == "sink_local":
            q[:, h, :, 0] = 1.0
            q[:, h, :, n_special : n_special + d_y] = y[:, kv]
        elif kind == "vertical":
            q[:, h, :, : 1 + num_columns] = 1.0
        elif kind == "slash":
            q[:, h, :, 0] = _FALLBACK_SINK
            for o in offsets[h].tolist():
                q[:, h, o:, n_special + d_y :] += z[:, kv, : n - o]
        elif kind == "retrieval":
            q[:, h, :, 0] = _FALLBACK_SINK
            q[:, h, :, 1 + num_columns : n_special] = 1.0
        else:  # diffuse: weak random queries, attention close to uniform
            q[:, h] = 0.3 * torch.randn(batch, n, d, **opts) / math.sqrt(d)
    q = q * (math.sqrt(d) / temperature)

    rotation = torch.linalg.qr(torch.randn(h_kv, d, d, **opts)).Q
    q = q.view(batch, h_kv, h_q // h_kv, n, d) @ rotation[None, :, None]
    k = k @ rotation[None]
    v = torch.randn(batch, h_kv, n, d, **opts)
    return Workload(
        q=q.reshape(batch, h_q, n, d).to(dtype),
        k=k.to(dtype),
        v=v.to(dtype),
        head_kinds=kinds,
        num_sinks=num_sinks,
        local_window=local_window,
        columns=columns,
        offsets=offsets,
        spans=spans,
        temperature=float(temperature),
    )


# the head shapes GPU benchmarks time plans on: KV heads, query heads per KV head, head dim
MODEL_SHAPES = {"llama": (8, 4, 128), "smollm2": (3, 3, 64)}  # Llama-3-8B's, SmolLM2-135M's


def model_workload(
    shape: str, seq_len: int, *, device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Workload:  # fmt: skip
    """`make_workload` on the heads of ``shape`` (a `MODEL_SHAPES` key), the four structured kinds
    (not "diffuse") cycled over its query heads."""
    if shape not in MODEL_SHAPES:
        raise ValueError(f"shape: expected one of {sorted(MODEL_SHAPES)}, got {shape!r}")
    kv_heads, group, head_dim = MODEL_SHAPES[shape]
    kinds = [KINDS[h % 4] for h in range(kv_heads * group)]
    return make_workload(
        kinds, num_kv_heads=kv_heads, seq_len=seq_len, head_dim=head_dim, device=device,
        dtype=dtype,
    )  # fmt: skip


def min_seq_len(
    num_sinks: int = NUM_SINKS, num_columns: int = NUM_COLUMNS, span_len: int = SPAN_LEN
) -> int:
    """The shortest ``seq_len`` `make_workload` takes: its sinks, then room for the columns or a
    span (68 at its defaults)."""
    return num_sinks + max(num_columns, span_len)


def _check(kinds: tuple[str, ...], sizes: dict[str, tuple[int, int]], temperature: float) -> None:
    """ValueError naming the argument for any bad size or temperature (kinds are checked as
    they are read)."""
    for name, (value, low) in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or temperature <= 0
    ):
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    h_kv, n, d = sizes["num_kv_heads"][0], sizes["seq_len"][0], sizes["head_dim"][0]
    num_sinks, num_columns = sizes["num_sinks"][0], sizes["num_columns"][0]
    num_offsets, num_spans, span_len = (
        sizes[f][0] for f in ("num_offsets", "num_spans", "span_len")
    )
    if len(kinds) % h_kv:
        raise ValueError(f"num_kv_heads: {h_kv} does not divide the {len(kinds)} query heads")
    if min_seq_len(num_sinks, num_columns, span_len) > n:
        raise ValueError(
            f"seq_len: {n} is too short for {num_sinks} sinks plus the columns / spans"
        )
    if num_offsets > max(n // 2, 1):
        raise ValueError(f"num_offsets: at most seq_len // 2 = {n // 2}, got {num_offsets}")
    if d - (1 + num_columns + num_spans) < 2:
        raise ValueError(
            f"head_dim: {d} leaves no room for position codes beside "
            f"{1 + num_columns + num_spans} planted directions"
        )
