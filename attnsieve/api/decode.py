"""Decode ops: attention of one query token over a paged `Cache` (`decode_attention`) and the
page selection behind sparse decode (`quest_page_scores`, `select_pages`, `page_budget`), and
`top_mask`, `select_pages`' choice as a mask, which planners use too. See
`attnsieve.api` for the backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from attnsieve.api.backend import FLOAT, check_forward_only, resolve_backend
from attnsieve.checks import (
    check_bool,
    check_dtype,
    check_fraction,
    check_int,
    check_int32,
    check_storage,
    check_tensor,
)
from attnsieve.kernels import page_scores_reference, page_select_reference

if TYPE_CHECKING:
    from attnsieve.cache import Cache
    from attnsieve.views import Pages


def decode_attention(
    q: Tensor,
    cache: Cache,
    layer: int,
    *,
    pages: Pages | None = None,
    scale: float | None = None,
    out: Tensor | None = None,
    return_lse: bool = False,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of one query token per sequence, q (B, H_q, D), over layer ``layer`` of ``cache``.

    ``pages`` (from a decode selector) restricts the read to those logical pages of each KV head;
    None reads every cached token. Returns (B, H_q, D) in q's dtype (and lse float32 (B, H_q)),
    into ``out`` if given (a (B, H_q, D) buffer of q's dtype). Heads with no cached token give 0
    and lse -inf. q is on the cache's device, in its dtype (float16, bfloat16 or float32 over FP8
    pages); ``scale`` defaults to 1/sqrt(D).

    A page list is trusted on the Triton backend (reading it would synchronise with the GPU): each
    head's listed pages must be distinct logical pages it holds, ascending, as selectors return
    them; another list reads other heads' keys or counts a page twice. The reference backend
    checks it.
    """
    from attnsieve.cache import Cache
    from attnsieve.kernels import decode_reference
    from attnsieve.views import Pages

    # q is checked here only as far as choosing a backend needs (and against the cache: the
    # kernel's check would name its pools); the layer (kernel_args), scale and everything else
    # are checked once, by the kernel's or the twin's argument check
    if not isinstance(cache, Cache):
        raise TypeError(f"cache: expected an attnsieve.cache.Cache, got {type(cache).__name__}")
    check_tensor("q", q, 3, "(batch, heads, head_dim)", cache.device)
    if pages is not None and not isinstance(pages, Pages):
        raise TypeError(
            f"pages: expected a decode selector's Pages or None, got {type(pages).__name__}"
        )
    check_bool("return_lse", return_lse)
    b, h_q, d = q.shape
    if b != cache.batch or d != cache.head_dim or h_q == 0 or h_q % cache.kv_heads:
        raise ValueError(
            f"q: expected (B={cache.batch}, a positive multiple of the cache's "
            f"H_kv={cache.kv_heads}, D={cache.head_dim}), got {tuple(q.shape)}"
        )
    if cache.kv_dtype is None and q.dtype != cache.dtype:
        raise TypeError(f"q: expected the cache's dtype {cache.dtype}, got {q.dtype}")
    args = cache.kernel_args(layer)
    sparse = {} if pages is None else {"pages": pages.idx, "page_count": pages.count}
    use = resolve_backend(backend, q)
    check_forward_only(use, q=q)
    if use == "reference":
        run = decode_reference.decode_reference
    else:
        from attnsieve.kernels.decode import decode_attention as run
    return run(
        q, args.k_pages, args.v_pages, args.page_table, args.lengths, **sparse, scale=scale,
        k_scale=args.k_scale, v_scale=args.v_scale, log_weight=args.log_weight, out=out,
        return_lse=return_lse,
    )  # fmt: skip


def quest_page_scores(
    q: Tensor,
    key_min: Tensor,
    key_max: Tensor,
    page_table: Tensor,
    page_count: Tensor,
    *,
    backend: str | None = None,
) -> Tensor:
    """float32 (B, H_kv, P): Quest's score of each logical page of each KV head (arXiv 2406.10774).

    Args:
        q: (B, H_q, D) float16/bfloat16/float32 decode query; H_q a multiple of H_kv.
        key_min, key_max: (N, D) float32 or bfloat16 pools of per-page channel-wise key min / max
            (any strides), e.g. a `PageView`'s ``key_min_pool`` / ``key_max_pool``.
        page_table: int32 (B, H_kv, P), the pool row of each logical page; entries past a head's
            count may hold anything (they are never read).
        page_count: int32 (B, H_kv) valid pages per head.
        backend: see `attnsieve.api`.

    A page's score is the max over the KV head's g query heads of the upper bound of q . k over
    its keys, ``sum_d max(q_d min_d, q_d max_d)``, computed as ``q+ . max + q- . min``; a page
    whose bound is NaN for some query head (a NaN summary, or an infinite one met by a query
    channel of the other sign) scores -inf. The last valid page (the current token's)
    scores +inf and pages past the count -inf, so a plain top-k picks the current page first and
    an invalid page never; a head with no page scores -inf throughout, as does every head over
    empty pools (no page can be counted there). The counts and the counted
    page table entries are trusted on the Triton backend (reading them would synchronise with the
    GPU); the reference backend checks them.
    """
    check_tensor("q", q, 3, "(batch, heads, head_dim)")
    check_dtype("q", q, FLOAT)
    for name, t in (("key_min", key_min), ("key_max", key_max)):
        check_tensor(name, t, 2, "(pool pages, head_dim)")
        check_dtype(name, t, (torch.float32, torch.bfloat16))
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (q's), got {t.device}")
    if key_max.shape != key_min.shape:
        raise ValueError(
            f"key_max: expected key_min's shape {tuple(key_min.shape)}, got {tuple(key_max.shape)}"
        )
    check_int32("page_table", page_table, 3, "(batch, kv_heads, pages)")
    b, h_kv, p = page_table.shape
    d = key_min.shape[1]
    if h_kv == 0 or d == 0:
        raise ValueError(
            f"page_table, key_min: expected H_kv >= 1 and D >= 1, got {tuple(page_table.shape)} "
            f"and {tuple(key_min.shape)}"
        )
    if page_table.device != q.device:
        raise ValueError(f"page_table: expected device {q.device} (q's), got {page_table.device}")
    if q.shape[0] != b or q.shape[2] != d or q.shape[1] == 0 or q.shape[1] % h_kv:
        raise ValueError(
            f"q: expected (B={b}, a positive multiple of H_kv={h_kv}, D={d}), got {tuple(q.shape)}"
        )
    if not isinstance(page_count, Tensor) or page_count.dtype != torch.int32:
        got = page_count.dtype if isinstance(page_count, Tensor) else type(page_count).__name__
        raise TypeError(f"page_count: expected an int32 tensor, got {got}")
    check_storage("page_count", page_count)
    if page_count.shape != (b, h_kv) or page_count.device != q.device:
        raise ValueError(
            f"page_count: expected shape {(b, h_kv)} on {q.device}, got "
            f"{tuple(page_count.shape)} on {page_count.device}"
        )
    args = (q, key_min, key_max, page_table, page_count)
    if resolve_backend(backend, q, FLOAT) == "reference":
        return page_scores_reference.page_scores(*args)
    from attnsieve.kernels.page_scores import page_scores

    return page_scores(*args)


def select_pages(
    score: Tensor, count: Tensor, width: int, *, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """Each row's ``count`` highest-scoring pages as an ascending list: ``(idx, n)``.

    Args:
        score: float32 (B, H, P) page scores (any strides), e.g. `quest_page_scores`'s.
        count: integer (B, H) pages to pick per row, on score's device; clamped to
            [0, min(width, P)].
        width: list slots per row, an int >= 1.
        backend: see `attnsieve.api`.

    Returns ``idx`` int32 (B, H, width), contiguous: the picked page indices ascending, then -1;
    and ``n`` int32 (B, H), the clamped count. Ties at the threshold go to the lower indices, so
    every backend picks the same pages; a -inf page is picked only when fewer than ``n`` pages
    score above -inf. No host synchronisation (capturable in a CUDA graph).
    """
    _check_score_count(score, count, "(batch, heads, pages)")
    check_int("width", width, 1)
    if resolve_backend(backend, score, (torch.float32,)) == "reference":
        return page_select_reference.select_pages(score, count, width)
    from attnsieve.kernels.page_select import select_pages

    return select_pages(score, count, width)


def top_mask(score: Tensor, count: Tensor, *, backend: str | None = None) -> Tensor:
    """bool like ``score``: each row's ``count`` largest entries, as `select_pages` picks them.

    Args:
        score: float32 (B, H, L), any strides.
        count: integer (B, H) entries to keep per row, on score's device; clamped to [0, L].
        backend: see `attnsieve.api`.

    Ties at the threshold go to the lower indices (every backend keeps the same entries); NaNs
    rank by their bits. No host synchronisation (capturable in a CUDA graph).
    """
    _check_score_count(score, count, "(batch, heads, entries)")
    if resolve_backend(backend, score, (torch.float32,)) == "reference":
        return page_select_reference.top_mask(score, count)
    from attnsieve.kernels.page_select import top_mask

    return top_mask(score, count)


def _check_score_count(score: object, count: object, dims: str) -> None:
    check_tensor("score", score, 3, dims)
    check_dtype("score", score, (torch.float32,))
    if (
        not isinstance(count, Tensor)
        or count.dtype.is_floating_point
        or count.dtype.is_complex
        or count.dtype == torch.bool
    ):
        got = count.dtype if isinstance(count, Tensor) else type(count).__name__
        raise TypeError(f"count: expected an integer tensor, got {got}")
    check_storage("count", count)
    if count.shape != score.shape[:2] or count.device != score.device:
        raise ValueError(
            f"count: expected shape {tuple(score.shape[:2])} on {score.device}, got "
            f"{tuple(count.shape)} on {count.device}"
        )


def page_budget(
    lengths: Tensor,
    page_count: Tensor,
    page_size: int,
    *,
    budget_tokens: int | None = None,
    ratio: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """int32 (B, H): how many pages each head of a decode step reads under a token budget.

    Args:
        lengths: int32 (B, H) tokens per head.
        page_count: int32 (B, H) pages per head (ceil(length / page_size)).
        page_size: tokens per page, an int >= 1.
        budget_tokens, ratio: exactly one: a token budget per head, or a fraction of its length.
        backend: see `attnsieve.api`.

    A head's token target is min(budget_tokens, length) or min(ceil(ratio x length), length)
    (float32); it reads that many tokens' worth of whole pages, at least 1 (the current token's)
    and at most its page count, and every page when the target is its whole length. No host
    synchronisation on the Triton backend (capturable in a CUDA graph), which trusts the values;
    the reference backend refuses negative ones.
    """
    check_int32("lengths", lengths, 2, "(batch, heads)")
    check_int32("page_count", page_count, 2, "(batch, heads)")
    if page_count.shape != lengths.shape or page_count.device != lengths.device:
        raise ValueError(
            f"page_count: expected shape {tuple(lengths.shape)} on {lengths.device}, got "
            f"{tuple(page_count.shape)} on {page_count.device}"
        )
    check_int("page_size", page_size, 1)
    if (budget_tokens is None) == (ratio is None):
        raise ValueError(
            f"budget_tokens, ratio: set exactly one, got {budget_tokens!r} and {ratio!r}"
        )
    if budget_tokens is not None:
        check_int("budget_tokens", budget_tokens, 1)
    else:
        check_fraction("ratio", ratio)
    args = (lengths, page_count, page_size, budget_tokens, ratio)
    if resolve_backend(backend, lengths, (torch.int32,)) == "reference":
        return page_select_reference.page_budget(*args)
    from attnsieve.kernels.page_select import page_budget

    return page_budget(*args)
