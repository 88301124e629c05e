"""Planning ops: the estimates planners score key blocks with, cumulative-mass thresholds, and
block layouts and their density, each on Triton or its float32 twin (see `attnsieve.api`)."""

from __future__ import annotations

import importlib
import math

import torch
from torch import Tensor

from attnsieve.api.backend import FLOAT, HALF, resolve_backend
from attnsieve.checks import (
    cdiv,
    check_bool,
    check_dtype,
    check_float,
    check_index,
    check_int,
    check_qk,
    check_scale,
    check_storage,
    check_tensor,
)
from attnsieve.kernels import line_mask_reference, mass_threshold_reference
from attnsieve.layout import Layout
from attnsieve.layout_spans import pack_sorted

INDEX = (torch.int32, torch.int64)


def _kernels(name: str, backend: str | None, t: Tensor, dtypes: tuple[torch.dtype, ...] = HALF):
    """The module holding op family ``name`` (planning, pooling) for ``t`` (auto: Triton for CUDA
    tensors of ``dtypes``): `attnsieve.kernels.<name>` or its float32 twin `<name>_reference`."""
    twin = resolve_backend(backend, t, dtypes) == "reference"
    return importlib.import_module(f"attnsieve.kernels.{name}{'_reference' if twin else ''}")


def _check_head_dim(names: str, d: int) -> None:
    """The scored planning ops scale by 1/sqrt(head_dim): an empty head has no scores."""
    if d < 1:
        raise ValueError(f"{names}: expected head_dim >= 1, got {d}")


def block_mean_pool(
    x: Tensor, block: int, *, heads: Tensor | None = None, backend: str | None = None
) -> Tensor:
    """float32 (B, H, ceil(L / block), D): mean of every ``block`` tokens of x (B, H, L, D).

    Pool Q per query head and K per KV head (GQA needs no repeat); the last block averages only
    the tokens it has. ``heads``: None, or bool (B, H) on x's device: the heads it leaves out are
    zero, and the kernel does not read them (FlexPrefill pools only its query-aware heads' Q).
    """
    check_int("block", block, 1)
    check_tensor("x", x, 4, "(batch, heads, seq, head_dim)")
    check_dtype("x", x, FLOAT)  # the twin pools in float32: a float64 x would be cast silently
    _check_heads(heads, x.shape[:2], x.device)
    return _kernels("pooling", backend, x).block_mean_pool(x, block, heads)


def block_mean_pool_qk(
    q: Tensor,
    k: Tensor,
    *,
    block_q: int,
    block_k: int,
    heads: Tensor | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """`block_mean_pool` of q (B, H_q, N, D) by ``block_q`` and of k (B, H_kv, M, D) by
    ``block_k``, in one launch: ``heads`` (None, or bool (B, H_q)) picks q's heads and, through
    them, k's (a KV head where any of its query heads is). FlexPrefill's query-aware maps.
    """
    check_int("block_q", block_q, 1)
    check_int("block_k", block_k, 1)
    check_qk(q, k)
    check_dtype("q", q, FLOAT)
    _check_heads(heads, q.shape[:2], q.device)
    # a tuple on both backends (the Triton launcher returns a list)
    q_pooled, k_pooled = _kernels("pooling", backend, q).block_mean_pool_qk(
        q, k, block_q, block_k, heads
    )
    return q_pooled, k_pooled


def _check_heads(heads: object, shape: torch.Size, device: torch.device) -> None:
    if heads is not None:
        check_index("heads", heads, tuple(shape), torch.bool, device)


def pooled_block_probs(
    q_pooled: Tensor,
    k_pooled: Tensor,
    *,
    num_queries: int,
    num_keys: int,
    block_q: int,
    block_k: int,
    scale: float | None = None,
    causal: bool = True,
    heads: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """float32 (B, H_q, QB, KB): softmax over key blocks of pooled-Q · pooled-K.

    FlexPrefill's query-aware estimate (and SpargeAttn's). Inputs are `block_mean_pool` outputs,
    (B, H_q, QB, D) and (B, H_kv, KB, D); rows that see no key block are zero. With ``causal``, key
    block j is visible iff its first key is at or before the query block's last query.
    ``heads``: None, or bool (B, H_q) on their device: the kernel neither scores nor writes the
    heads it leaves out, so their entries are undefined (the twin's are zero): whatever reads the
    map must skip them (FlexPrefill's `mass_threshold` gives them a threshold of 0).
    """
    for name, value in (("num_queries", num_queries), ("num_keys", num_keys)):
        check_int(name, value, 1)
    check_int("block_q", block_q, 1)
    check_int("block_k", block_k, 1)
    check_scale(scale)
    check_bool("causal", causal)
    qb, kb = cdiv(num_queries, block_q), cdiv(num_keys, block_k)
    for name, t, blocks in (("q_pooled", q_pooled, qb), ("k_pooled", k_pooled, kb)):
        if not isinstance(t, Tensor) or t.dtype != torch.float32:
            got = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"{name}: expected a float32 tensor (block_mean_pool's), got {got}")
        if t.dim() != 4 or t.shape[2] != blocks:
            raise ValueError(f"{name}: expected shape (B, H, {blocks}, D), got {tuple(t.shape)}")
    if q_pooled.device != k_pooled.device:
        raise ValueError(
            f"q_pooled, k_pooled: expected one device, got {q_pooled.device} and {k_pooled.device}"
        )
    check_storage("q_pooled", q_pooled)
    check_storage("k_pooled", k_pooled)
    if q_pooled.shape[0] != k_pooled.shape[0]:
        raise ValueError(
            f"q_pooled, k_pooled: batch sizes differ ({q_pooled.shape[0]} vs {k_pooled.shape[0]})"
        )
    h_q, h_kv = q_pooled.shape[1], k_pooled.shape[1]
    if h_kv == 0 or h_q % h_kv or q_pooled.shape[3] != k_pooled.shape[3]:
        raise ValueError("q_pooled, k_pooled: H_q must be a multiple of H_kv, head_dim must match")
    _check_head_dim("q_pooled, k_pooled", q_pooled.shape[3])
    _check_heads(heads, q_pooled.shape[:2], q_pooled.device)
    # its inputs are block_mean_pool's float32 means, so float32 is what selects the kernel
    return _kernels("pooling", backend, q_pooled, (torch.float32,)).pooled_block_probs(
        q_pooled, k_pooled, num_queries=num_queries, num_keys=num_keys, block_q=block_q,
        block_k=block_k, scale=scale, causal=causal, heads=heads,
    )  # fmt: skip


def antidiagonal_block_scores(
    q: Tensor,
    k: Tensor,
    *,
    stride: int,
    block_q: int,
    block_k: int,
    scale: float | None = None,
    causal: bool = True,
    backend: str | None = None,
) -> Tensor:
    """float32 (B, H_q, QB, KB): XAttention's antidiagonal block scores (arXiv 2503.16428).

    Strided row r pairs the query group [rS, rS+S) read backwards with key group c read forwards
    (one antidiagonal per S×S tile), is softmax-normalised over the key groups it sees (logits
    scaled by ``scale / stride``, as the paper), and its probabilities are summed per (query
    block, key block). ``block_q / stride`` and ``block_k / stride`` must be powers of two of at
    most 128 (the Triton kernel's largest tiles; the twin is held to them too, so that a call
    runs on either backend).
    """
    check_qk(q, k)
    check_dtype("q", q, FLOAT)
    _check_head_dim("q, k", q.shape[3])
    check_scale(scale)
    check_int("stride", stride, 1)
    check_int("block_q", block_q, 1)
    check_int("block_k", block_k, 1)
    check_bool("causal", causal)
    rq, rb = block_q // stride, block_k // stride
    if block_q % stride or block_k % stride or rq & (rq - 1) or rb & (rb - 1) or max(rq, rb) > 128:
        raise ValueError(
            f"stride: must divide block_q={block_q} and block_k={block_k} into powers of two of "
            f"at most 128, got {stride}"
        )
    return _kernels("antidiagonal", backend, q).antidiagonal_block_scores(
        q, k, stride=stride, block_q=block_q, block_k=block_k, scale=scale, causal=causal
    )


def last_query_stats(
    q: Tensor,
    k: Tensor,
    *,
    last_q: int,
    block_k: int,
    scale: float | None = None,
    pooled: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, ...]:
    """Causal attention of the last ``last_q`` queries as (vertical, slash), float32, and with
    ``pooled`` their mean score per key block as a third.

    ``vertical`` (B, H_q, KB): their probability mass per block of ``block_k`` keys, averaged
    over the rows; ``slash`` (B, H_q, KB): per block of diagonal offsets
    [s·block_k, (s+1)·block_k). ``block_k`` 1: per key and per diagonal. ``pooled``
    (B, H_q, KB): q·k × scale (default 1/sqrt(D)) averaged over the rows and the block's keys,
    unmasked: the mean last query against the block's mean key, the logits of FlexPrefill's
    pooled estimate ā (`choose_lines`), taken from the same pass over the keys.
    """
    check_qk(q, k)
    check_dtype("q", q, FLOAT)
    _check_head_dim("q, k", q.shape[3])
    check_scale(scale)
    check_int("block_k", block_k, 1)
    check_bool("pooled", pooled)
    if not isinstance(last_q, int) or isinstance(last_q, bool) or not 1 <= last_q <= q.shape[2]:
        raise ValueError(f"last_q: expected an int in [1, N={q.shape[2]}], got {last_q!r}")
    ops = _kernels("planning", backend, q)
    return ops.last_query_stats(q, k, last_q=last_q, block_k=block_k, scale=scale, pooled=pooled)


def choose_lines(
    vertical: Tensor,
    slash: Tensor,
    pooled: Tensor,
    *,
    gamma: float | Tensor,
    tau: float,
    lo: int,
    hi: int,
    backend: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """FlexPrefill's choice of lines: ``(query_aware, chosen, map_gamma)``.

    Args:
        vertical, slash: float32 (B, H_q, KB) the last queries' mass per key block and per offset
            block (`last_query_stats`); ``vertical`` is their estimate â.
        pooled: float32 (B, H_q, KB) the mean last query's scaled score against each block's
            mean key (`last_query_stats` with ``pooled``): ā = softmax(pooled).
        gamma: the share of each line's mass to keep: a number >= 0, or float32 (H_q,) per
            head, whose values are trusted (reading them would synchronise with the GPU).
        tau: a head is query-aware where sqrt(JS(ā, â)) < tau (natural log).
        lo, hi: the fewest and most blocks a line keeps (0 <= lo <= hi); a query-aware head's
            lines keep lo (its blocks come from its pooled map instead).
        backend: see `attnsieve.api`.

    Returns ``query_aware`` bool (B, H_q), ``chosen`` bool (B, H_q, 2, KB): per line
    (verticals, then slashes) its ``count`` largest blocks, ties to lower indices, with
    ``count`` the size of the smallest set holding ``gamma`` of the line's mass (`mass_threshold`;
    every block where gamma >= 1) clamped to [lo, hi], block 0 always, and every vertical block
    of a head whose gamma is >= 1 (query-aware or not, whatever ``hi``: that head is dense); and
    ``map_gamma`` float32 (B, H_q), the `mass_threshold` of each head's pooled block map: gamma
    for a query-aware head (at most the largest float32 below 1, which keeps only entries > 0),
    0 (nothing) for another.
    No host synchronisation.
    """
    check_tensor("vertical", vertical, 3, "(batch, q_heads, key_blocks)")
    b, h_q, kb = vertical.shape
    if kb < 1:
        raise ValueError(f"vertical: expected at least one key block, got shape {(b, h_q, kb)}")
    for name, line in (("vertical", vertical), ("slash", slash), ("pooled", pooled)):
        check_tensor(name, line, 3, "(batch, q_heads, key_blocks)")
        check_dtype(name, line, (torch.float32,))
        if line.shape != (b, h_q, kb) or line.device != vertical.device:
            raise ValueError(
                f"{name}: expected shape {(b, h_q, kb)} on {vertical.device}, got "
                f"{tuple(line.shape)} on {line.device}"
            )
    if isinstance(gamma, Tensor):
        check_index("gamma", gamma, (h_q,), torch.float32, vertical.device)
    else:
        check_float("gamma", gamma, 0.0, math.inf)
    check_float("tau", tau, 0.0, math.inf)
    check_int("lo", lo, 0)
    check_int("hi", hi, lo)
    ops = _kernels("line_choice", backend, vertical, (torch.float32,))
    return ops.choose_lines(vertical, slash, pooled, gamma=gamma, tau=tau, lo=lo, hi=hi)


def mass_threshold(
    probs: Tensor,
    threshold: float | Tensor,
    valid: Tensor | None = None,
    *,
    backend: str | None = None,
) -> Tensor:
    """bool like ``probs``: per row (last dim), the largest entries holding ``threshold`` of it.

    Args:
        probs: float (..., L), entries >= 0 (computed in float32), any strides.
        threshold: gamma, a real number or a float tensor broadcasting against (..., 1) (one per
            row, e.g. per head) on probs' device.
        valid: None or a bool tensor broadcasting to probs: other entries count as 0 and are
            never kept.
        backend: see `attnsieve.api`.

    With T the row's total, t* is the largest value such that the entries >= t* hold >= gamma·T;
    the row keeps the entries >= t* that are > 0 and valid. For distinct values these are the
    fewest entries, taken in descending order, that reach gamma·T; every entry tied with t* is
    kept, so all backends keep the same set (up to float sums rounding differently at the
    boundary). gamma >= 1 keeps every valid entry (zeros too), whatever the rounding; gamma·T <= 0
    (gamma <= 0, or a row of zeros) keeps nothing. A NaN entry (valid) or a NaN gamma keeps
    nothing in its row (everything valid if gamma >= 1). No host synchronisation.
    """
    if not isinstance(probs, Tensor) or not probs.is_floating_point():
        got = probs.dtype if isinstance(probs, Tensor) else type(probs).__name__
        raise TypeError(f"probs: expected a floating-point tensor, got {got}")
    if probs.dim() == 0:
        raise ValueError("probs: expected at least one dim (..., L), got a 0-dim tensor")
    check_storage("probs", probs)
    rows = (*probs.shape[:-1], 1)
    if isinstance(threshold, Tensor):
        if not threshold.is_floating_point():
            raise TypeError(f"threshold: expected a float tensor, got {threshold.dtype}")
        if threshold.device != probs.device:
            raise ValueError(f"threshold: expected device {probs.device}, got {threshold.device}")
        check_storage("threshold", threshold)
        _check_broadcasts("threshold", threshold, rows)
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold: expected a number or a float tensor, got {threshold!r:.80}")
    else:
        threshold = float(threshold)  # a NumPy float64 is a float, but not to every torch op
    if valid is not None:
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool:
            got = valid.dtype if isinstance(valid, Tensor) else type(valid).__name__
            raise TypeError(f"valid: expected None or a bool tensor, got {got}")
        if valid.device != probs.device:
            raise ValueError(f"valid: expected device {probs.device}, got {valid.device}")
        check_storage("valid", valid)
        _check_broadcasts("valid", valid, probs.shape)
    if resolve_backend(backend, probs, (torch.float32,)) == "reference":
        return mass_threshold_reference.mass_threshold(probs, threshold, valid)
    from attnsieve.kernels.mass_threshold import mass_threshold as run

    return run(probs, threshold, valid)


def line_block_mask(
    verticals: Tensor,
    bands: Tensor | None,
    *,
    band: int,
    block_q: int,
    block_k: int,
    num_queries: int,
    num_keys: int,
    extra: Tensor | None = None,
    extra_heads: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """bool (B, H, QB, KB): per head, the visible blocks of the chosen key blocks, every block a
    chosen diagonal band crosses, the diagonal blocks, and ``extra``'s blocks.

    Args:
        verticals: bool (B, H, KB), KB = ceil(M / block_k): chosen key blocks (each keeps the
            blocks of its column that some query of the row can see).
        bands: None or bool (B, H, ceil(M / band)): band s chooses the diagonals
            [s·band, (s+1)·band) (diagonal o: query position p with key p - o).
        extra: None or bool (B, H, QB, KB), kept as given, in the heads where ``extra_heads``
            (bool (B, H); None: every head) is True.
        backend: see `attnsieve.api` (Triton for a CUDA ``verticals``).

    FlexPrefill's (arXiv 2502.20766) block plan in one pass (`attnsieve.kernels.line_mask`); the
    twin composes tensor ops. Positions are bottom-right aligned. No host synchronisation.
    """
    kwargs = _line_mask_args(
        verticals, bands, band, block_q, block_k, num_queries, num_keys, extra, extra_heads
    )
    if resolve_backend(backend, verticals, (torch.bool,)) == "reference":
        return line_mask_reference.line_block_mask(verticals, bands, **kwargs)
    from attnsieve.kernels.line_mask import line_block_mask as launch

    return launch(verticals, bands, **kwargs)


def line_block_layout(
    verticals: Tensor,
    bands: Tensor | None,
    *,
    band: int,
    block_q: int,
    block_k: int,
    num_queries: int,
    num_keys: int,
    extra: Tensor | None = None,
    extra_heads: Tensor | None = None,
    backend: str | None = None,
) -> Layout:
    """`block_layout` of `line_block_mask` (same arguments): for a CUDA ``verticals`` one launch
    writes the layout's lists, where the mask and its packing took two (FlexPrefill's plan)."""
    kwargs = _line_mask_args(
        verticals, bands, band, block_q, block_k, num_queries, num_keys, extra, extra_heads
    )
    if 0 in verticals.shape[:2]:  # as `block_layout` refuses such a mask
        raise ValueError(
            f"verticals: a layout needs B >= 1 and H >= 1, got shape {tuple(verticals.shape)}"
        )
    if resolve_backend(backend, verticals, (torch.bool,)) == "reference":
        idx, count = pack_sorted(line_mask_reference.line_block_mask(verticals, bands, **kwargs))
    else:
        from attnsieve.kernels.line_mask import line_block_lists

        idx, count = line_block_lists(verticals, bands, **kwargs)
    sizes = dict(block_q=block_q, block_k=block_k, num_queries=num_queries, num_keys=num_keys)
    return Layout(idx, count, **sizes, _valid=True)  # sorted, in range: pack_sorted's


def _line_mask_args(
    verticals: Tensor,
    bands: Tensor | None,
    band: int,
    block_q: int,
    block_k: int,
    num_queries: int,
    num_keys: int,
    extra: Tensor | None,
    extra_heads: Tensor | None,
) -> dict:
    """`line_block_mask`'s checks; its keyword arguments but ``bands`` and the backend."""
    sizes = dict(num_queries=num_queries, num_keys=num_keys, block_q=block_q, block_k=block_k)
    for name, value in (*sizes.items(), ("band", band)):
        check_int(name, value, 1)
    qb, kb = cdiv(num_queries, block_q), cdiv(num_keys, block_k)
    _check_bool("verticals", verticals, (None, None, kb))
    b, h = verticals.shape[:2]
    for name, t, shape in (
        ("bands", bands, (b, h, cdiv(num_keys, band))),
        ("extra", extra, (b, h, qb, kb)),
        ("extra_heads", extra_heads, (b, h)),
    ):
        if t is not None:
            _check_bool(name, t, shape)
            if t.device != verticals.device:
                raise ValueError(f"{name}: expected a tensor on {verticals.device}, got {t.device}")
    if extra_heads is not None and extra is None:
        raise ValueError("extra_heads: expected None when extra is None")
    return dict(**sizes, band=band, extra=extra, extra_heads=extra_heads)


def _check_bool(name: str, t: object, shape: tuple[int | None, ...]) -> None:
    """A bool tensor of ``shape`` (None: B or H, any size)."""
    if not isinstance(t, Tensor) or t.dtype != torch.bool:
        got = t.dtype if isinstance(t, Tensor) else type(t).__name__
        raise TypeError(f"{name}: expected a torch.bool tensor, got {got}")
    check_storage(name, t)
    sizes = zip(shape, t.shape, strict=False)
    if t.dim() != len(shape) or any(want not in (None, got) for want, got in sizes):
        want = ", ".join("BH"[i] if w is None else str(w) for i, w in enumerate(shape))
        raise ValueError(f"{name}: expected shape ({want}), got {tuple(t.shape)}")


def block_layout(
    mask: Tensor,
    *,
    block_q: int,
    block_k: int,
    num_queries: int,
    num_keys: int,
    backend: str | None = None,
) -> Layout:
    """`Layout.from_block_mask` of a bool (B, H, QB, KB) block mask, its lists packed in one
    launch for a CUDA mask (`attnsieve.kernels.pack`): the block planners' last step."""
    sizes = dict(block_q=block_q, block_k=block_k, num_queries=num_queries, num_keys=num_keys)
    Layout.check_block_mask(mask, **sizes)
    if resolve_backend(backend, mask, (torch.bool,)) == "reference":
        idx, count = pack_sorted(mask)
    else:
        from attnsieve.kernels.pack import pack_block_mask

        idx, count = pack_block_mask(mask)
    # sorted, in-range lists either way (the kernel's are pack_sorted's bit for bit,
    # tests/test_kernel_pack.py), as from_block_mask builds them
    return Layout(idx, count, **sizes, _valid=True)


def line_layout(
    columns: Tensor,
    offsets: Tensor,
    *,
    block_q: int,
    block_k: int,
    num_queries: int,
    num_keys: int,
    backend: str | None = None,
) -> Layout:
    """`Layout.from_lines` (MInference's vertical-slash layout: key ``columns`` (B, H, C) and
    diagonal ``offsets`` (B, H, S)), every query block's row built in one launch for CUDA
    tensors (`attnsieve.kernels.line_rows`; the same tensors as the twin, bit for bit,
    tests/test_layout_lines.py). Host syncs as `Layout.from_lines`."""
    rows = None  # a non-tensor argument gets from_lines' named error
    if isinstance(columns, Tensor) and resolve_backend(backend, columns, INDEX) == "triton":
        from attnsieve.kernels.line_rows import line_rows as rows
    return Layout.from_lines(
        columns, offsets, block_q=block_q, block_k=block_k, num_queries=num_queries,
        num_keys=num_keys, rows=rows,
    )  # fmt: skip


def layout_density(layout: Layout, *, causal: bool = True, backend: str | None = None) -> Tensor:
    """float64 (B, H): the (query, key) pairs ``layout`` computes over those of dense (causal)
    attention, exactly: `Layout.density` with ``reduce=False``, in one launch for a CUDA layout
    (its index tensors are int32) and without a host sync either way."""
    if not isinstance(layout, Layout):
        raise TypeError(f"layout: expected a Layout, got {type(layout).__name__}")
    check_bool("causal", causal)
    if resolve_backend(backend, layout.block_idx, (torch.int32,)) == "reference":
        return layout.density(causal, reduce=False)
    from attnsieve.kernels.layout_pairs import layout_pairs

    return layout_pairs(layout, causal).sum(-1).double() / max(layout.dense_pairs(causal), 1)


def _check_broadcasts(name: str, t: Tensor, shape: tuple[int, ...]) -> None:
    try:
        ok = torch.broadcast_shapes(t.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected a shape broadcasting to {shape}, got {tuple(t.shape)}")
