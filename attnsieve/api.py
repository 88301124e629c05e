"""Public ops: the one place that picks a backend for each op (Triton, the reference twin or SDPA).

- `attention`: prefill attention restricted to a `Layout` (dense when None).
- `dense_attention`: dense attention with transformers' "sdpa" mask conventions and logit
  soft-capping (the fallback of the transformers adapter).
- `decode_attention`: one query token per sequence over a paged `Cache` layer, optionally
  restricted to a list of pages (sparse decode).
- Planning estimates (`block_mean_pool`, `pooled_block_probs`, `antidiagonal_block_scores`,
  `last_query_stats`): the inner steps of planners.
- `quest_page_scores`: the page scores by which Quest picks the pages a decode step reads.
- `select_pages`: the ascending lists of each row's top-``count`` pages by a score.
- `mass_threshold`: each row's largest entries holding a fraction of its mass (the cumulative
  thresholds of FlexPrefill, XAttention and SpargeAttn), without a sort.
- `line_block_mask`: the block mask of chosen key blocks and diagonal bands (FlexPrefill's
  vertical-slash selection); `block_layout`: a layout from a block mask; `layout_density`: a
  layout's computed pairs over dense attention's, per batch and head.

Backends: "auto" (default) runs Triton for float16/bfloat16 CUDA tensors (`quest_page_scores`:
any CUDA query, it computes in float32 either way; `pooled_block_probs`, `select_pages`,
`mass_threshold`: float32 CUDA inputs; `line_block_mask`, `block_layout`, `layout_density`: a
CUDA mask or layout)
and the PyTorch reference twin elsewhere; "triton" or "reference" (argument or
$ATTNSIEVE_BACKEND) forces one. "triton" on CPU needs TRITON_INTERPRET=1 set before triton is
imported.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from attnsieve.checks import (
    cdiv,
    check_bool,
    check_dtype,
    check_float,
    check_int,
    check_int32,
    check_out,
    check_qk,
    check_qkv,
    check_scale,
    check_tensor,
)
from attnsieve.kernels import (
    line_mask_reference,
    mass_threshold_reference,
    page_scores_reference,
    page_select_reference,
    planning_reference,
)
from attnsieve.kernels.prefill_reference import attention_reference
from attnsieve.layout import Layout, causal_token_mask
from attnsieve.layout_spans import pack_sorted

if TYPE_CHECKING:
    from attnsieve.cache import Cache
    from attnsieve.views import Pages

BACKENDS = ("auto", "triton", "reference")
PRECISIONS = ("bf16", "int8-fp8")
_HALF = (torch.float16, torch.bfloat16)
_FLOAT = (*_HALF, torch.float32)
_CHUNK_ELEMENTS = 1 << 24  # score elements per chunk of the soft-capping path


def resolve_backend(backend: str | None, t: Tensor, dtypes: tuple[torch.dtype, ...] = _HALF) -> str:
    """'triton' or 'reference' for ``t``: the argument, else $ATTNSIEVE_BACKEND, else auto
    (Triton for CUDA tensors of ``dtypes``)."""
    choice = backend or os.environ.get("ATTNSIEVE_BACKEND") or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {choice!r}")
    if choice == "auto":
        return "triton" if t.is_cuda and t.dtype in dtypes else "reference"
    return choice


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Layout | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    return_lse: bool = False,
    out: Tensor | None = None,
    precision: str = "bf16",
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of q (B, H_q, N, D) over k, v (B, H_kv, M, D), restricted to ``layout`` if given.

    Args:
        q, k, v: one float dtype and device; H_q a multiple of H_kv (native GQA, K/V never
            repeated).
        layout: the key blocks (and columns) each query block computes; None is dense.
        causal: bottom-right aligned (query i sits at key position M - N + i = query_offset + i).
        scale: softmax scale, default 1/sqrt(D); a positive finite number.
        return_lse: also return the natural-log log-sum-exp, float32 (B, H_q, N).
        out: optional (B, H_q, N, D) buffer of q's dtype written in place (any strides with a
            unit last one on the Triton backend, e.g. a transposed view of a (B, N, H_q, D)
            tensor); returned.
        precision: "bf16" (inputs' precision) or "int8-fp8" (SageAttention2-style INT8 Q·Kᵀ and
            FP8 P·V; the reference twin quantises identically and computes in float32).
        backend: see the module docstring.

    Rows that see no key give 0 and lse -inf. Keys that the layout or causality hides never
    contribute, whatever their values, on every backend. A dense causal layout with N == M and no
    lse runs PyTorch SDPA (cuDNN / flash) on CUDA, faster than the Triton kernel on dense work;
    SDPA propagates a NaN in a hidden key (see README, Known limits).
    """
    check_qkv(q, k, v)
    check_scale(scale)
    check_bool("causal", causal)
    check_bool("return_lse", return_lse)
    if layout is not None:
        if not isinstance(layout, Layout):
            raise TypeError(
                f"layout: expected an attnsieve Layout or None, got {type(layout).__name__}"
            )
        layout.check_inputs(q, k)
    if out is not None:
        check_out(out, q)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    use = resolve_backend(backend, q)
    if precision == "int8-fp8":
        if use == "reference":
            from attnsieve.kernels.quant_reference import quant_attention_reference as run
        else:
            from attnsieve.kernels.quant import quant_attention as run
        return run(q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse, out=out)
    if use == "reference":
        result = attention_reference(
            q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse
        )
        if return_lse:
            return _into(out, result[0]), result[1]
        return _into(out, result)
    from attnsieve.kernels.prefill import sparse_attention

    if layout is None:
        layout = Layout.dense(q.shape[2], k.shape[2], causal=causal, device=q.device)
    return sparse_attention(
        q, k, v, layout, causal=causal, scale=scale, return_lse=return_lse, out=out
    )


def _into(out: Tensor | None, result: Tensor) -> Tensor:
    if out is None:
        return result
    return out.copy_(result)


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
) -> Tensor:
    """Dense attention with transformers' "sdpa" conventions, (B, H_q, N, D).

    ``mask`` is None or a bool (True = attend) / additive float mask broadcasting to
    (B, 1, N, M); ``causal`` applies only without a mask, top-left aligned as in SDPA (keys past
    N are empty static-cache slots and are dropped). ``softcap`` is Gemma-2's tanh logit
    soft-capping, computed chunked over queries (no N × M score tensor). Causal attention without
    a mask on CUDA half tensors runs SDPA's cuDNN backend first (`kernels.prefill.sdpa_dense`).
    """
    check_qkv(q, k, v)
    check_scale(scale)
    check_bool("causal", causal)
    check_float("dropout", dropout, 0.0, 1.0)
    if softcap is not None:
        check_float("softcap", softcap, 1e-6, math.inf)
    if mask is not None and (
        not isinstance(mask, Tensor)
        or mask.dtype.is_complex
        or not (mask.dtype == torch.bool or mask.is_floating_point())
    ):
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask: expected None, a bool or an additive float tensor, got {got}")
    n, m = q.shape[2], k.shape[2]
    causal = mask is None and n > 1 and causal
    if causal and m > n:
        k, v = k[:, :, :n], v[:, :, :n]
    if causal and dropout == 0 and softcap is None:
        from attnsieve.kernels.prefill import sdpa_dense, sdpa_serves

        if sdpa_serves(q, k, v):
            return sdpa_dense(q, k, v, 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    gqa = q.shape[1] != k.shape[1]
    if softcap is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=scale,
            enable_gqa=gqa,
        )  # fmt: skip
    return _softcap_attention(q, k, v, mask, scale, dropout, softcap, causal)


def _softcap_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    scale: float | None,
    dropout: float,
    softcap: float,
    causal: bool,
) -> Tensor:
    """Gemma-2 attention (tanh logit soft-capping) chunked over queries; GQA through views."""
    b, h_q, n, d = q.shape
    h_kv, m = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kt = k[:, :, None].transpose(-1, -2)  # (B, H_kv, 1, D, M)
    out = torch.empty(b, h_q, n, d, dtype=q.dtype, device=q.device)
    rows = max(1, _CHUNK_ELEMENTS // max(b * h_q * m, 1))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        qc = q[:, :, start:stop].unflatten(1, (h_kv, h_q // h_kv))  # (B, H_kv, g, rows, D)
        scores = torch.tanh((qc @ kt).float() * (scale / softcap)) * softcap
        if mask is not None:
            visible = mask[:, :, None, start:stop]  # (B, 1, 1, rows, M)
        elif causal:
            visible = causal_token_mask(n, m, start, stop, q.device)
        else:
            visible = None
        if visible is not None and visible.dtype != torch.bool:  # an additive float mask
            scores = scores + visible
        elif visible is not None:  # finfo.min, not -inf: fully masked (padding) rows stay finite
            scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
        probs = F.dropout(scores.softmax(-1).to(q.dtype), p=dropout, training=dropout > 0)
        out[:, :, start:stop] = (probs @ v[:, :, None]).flatten(1, 2)
    return out


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
    None reads every cached token. Returns (B, H_q, D) in q's dtype (and lse float32 (B, H_q)).
    Heads with no cached token give 0 and lse -inf.
    """
    from attnsieve.cache import Cache
    from attnsieve.kernels import decode_reference
    from attnsieve.views import Pages

    # q is checked here only as far as choosing a backend needs; the layer (kernel_args), scale
    # and everything else are checked once, by the kernel's or the twin's argument check
    check_tensor("q", q, 3, "(batch, heads, head_dim)")
    if not isinstance(cache, Cache):
        raise TypeError(f"cache: expected an attnsieve.cache.Cache, got {type(cache).__name__}")
    if pages is not None and not isinstance(pages, Pages):
        raise TypeError(
            f"pages: expected a decode selector's Pages or None, got {type(pages).__name__}"
        )
    check_bool("return_lse", return_lse)
    args = cache.kernel_args(layer)
    sparse = {} if pages is None else {"pages": pages.idx, "page_count": pages.count}
    if resolve_backend(backend, q) == "reference":
        run = decode_reference.decode_reference
    else:
        from attnsieve.kernels.decode import decode_attention as run
    return run(
        q, args.k_pages, args.v_pages, args.page_table, args.lengths, **sparse, scale=scale,
        k_scale=args.k_scale, v_scale=args.v_scale, log_weight=args.log_weight, out=out,
        return_lse=return_lse,
    )  # fmt: skip


# ---- planning estimates ---------------------------------------------------------------------
def _planning(backend: str | None, t: Tensor, dtypes: tuple[torch.dtype, ...] = _HALF):
    """The module holding the planning op for ``t`` (auto: Triton for CUDA tensors of ``dtypes``):
    Triton kernels or their float32 twins."""
    if resolve_backend(backend, t, dtypes) == "reference":
        return planning_reference
    from attnsieve.kernels import planning

    return planning


def _check_head_dim(names: str, d: int) -> None:
    """The scored planning ops scale by 1/sqrt(head_dim): an empty head has no scores."""
    if d < 1:
        raise ValueError(f"{names}: expected head_dim >= 1, got {d}")


def block_mean_pool(x: Tensor, block: int, *, backend: str | None = None) -> Tensor:
    """float32 (B, H, ceil(L / block), D): mean of every ``block`` tokens of x (B, H, L, D).

    Pool Q per query head and K per KV head (GQA needs no repeat); the last block averages only
    the tokens it has.
    """
    check_int("block", block, 1)
    check_tensor("x", x, 4, "(batch, heads, seq, head_dim)")
    return _planning(backend, x).block_mean_pool(x, block)


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
    backend: str | None = None,
) -> Tensor:
    """float32 (B, H_q, QB, KB): softmax over key blocks of pooled-Q · pooled-K.

    FlexPrefill's query-aware estimate (and SpargeAttn's). Inputs are `block_mean_pool` outputs,
    (B, H_q, QB, D) and (B, H_kv, KB, D); rows that see no key block are zero. With ``causal``, key
    block j is visible iff its first key is at or before the query block's last query.
    """
    for name, value in (("num_queries", num_queries), ("num_keys", num_keys)):
        check_int(name, value, 1)
    check_int("block_q", block_q, 1)
    check_int("block_k", block_k, 1)
    check_scale(scale)
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
    if q_pooled.shape[0] != k_pooled.shape[0]:
        raise ValueError(
            f"q_pooled, k_pooled: batch sizes differ ({q_pooled.shape[0]} vs {k_pooled.shape[0]})"
        )
    h_q, h_kv = q_pooled.shape[1], k_pooled.shape[1]
    if h_kv == 0 or h_q % h_kv or q_pooled.shape[3] != k_pooled.shape[3]:
        raise ValueError("q_pooled, k_pooled: H_q must be a multiple of H_kv, head_dim must match")
    _check_head_dim("q_pooled, k_pooled", q_pooled.shape[3])
    # its inputs are block_mean_pool's float32 means, so float32 is what selects the kernel
    return _planning(backend, q_pooled, (torch.float32,)).pooled_block_probs(
        q_pooled, k_pooled, num_queries=num_queries, num_keys=num_keys, block_q=block_q,
        block_k=block_k, scale=scale, causal=causal,
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
    block, key block). ``block_q / stride`` and ``block_k / stride`` must be powers of two.
    """
    check_qk(q, k)
    _check_head_dim("q, k", q.shape[3])
    check_scale(scale)
    check_int("stride", stride, 1)
    check_int("block_q", block_q, 1)
    check_int("block_k", block_k, 1)
    rq, rb = block_q // stride, block_k // stride
    if block_q % stride or block_k % stride or rq & (rq - 1) or rb & (rb - 1):
        raise ValueError(
            f"stride: must divide block_q={block_q} and block_k={block_k} into powers of two, "
            f"got {stride}"
        )
    return _planning(backend, q).antidiagonal_block_scores(
        q, k, stride=stride, block_q=block_q, block_k=block_k, scale=scale, causal=causal
    )


def last_query_stats(
    q: Tensor,
    k: Tensor,
    *,
    last_q: int,
    block_k: int,
    scale: float | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Causal attention of the last ``last_q`` queries as (vertical, slash), float32.

    ``vertical`` (B, H_q, M): probability per key averaged over those rows; ``slash``
    (B, H_q, KB): their mass per block of diagonal offsets [s·block_k, (s+1)·block_k).
    """
    check_qk(q, k)
    _check_head_dim("q, k", q.shape[3])
    check_scale(scale)
    check_int("block_k", block_k, 1)
    if not isinstance(last_q, int) or isinstance(last_q, bool) or not 1 <= last_q <= q.shape[2]:
        raise ValueError(f"last_q: expected an int in [1, N={q.shape[2]}], got {last_q!r}")
    return _planning(backend, q).last_query_stats(q, k, last_q=last_q, block_k=block_k, scale=scale)


# ---- decode page selection ------------------------------------------------------------------
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
        backend: see the module docstring.

    A page's score is the max over the KV head's g query heads of the upper bound of q . k over
    its keys, ``sum_d max(q_d min_d, q_d max_d)``. The last valid page (the current token's)
    scores +inf and pages past the count -inf, so a plain top-k picks the current page first and
    an invalid page never; a head with no page scores -inf throughout. Page table entries are
    trusted (reading them would synchronise with the GPU).
    """
    check_tensor("q", q, 3, "(batch, heads, head_dim)")
    check_dtype("q", q, _FLOAT)
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
    if q.shape[0] != b or q.shape[2] != d or q.shape[1] % h_kv:
        raise ValueError(
            f"q: expected (B={b}, a multiple of H_kv={h_kv}, D={d}), got {tuple(q.shape)}"
        )
    if not isinstance(page_count, Tensor) or page_count.dtype != torch.int32:
        got = page_count.dtype if isinstance(page_count, Tensor) else type(page_count).__name__
        raise TypeError(f"page_count: expected an int32 tensor, got {got}")
    if page_count.shape != (b, h_kv) or page_count.device != q.device:
        raise ValueError(
            f"page_count: expected shape {(b, h_kv)} on {q.device}, got "
            f"{tuple(page_count.shape)} on {page_count.device}"
        )
    args = (q, key_min, key_max, page_table, page_count)
    if resolve_backend(backend, q, _FLOAT) == "reference":
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
        backend: see the module docstring.

    Returns ``idx`` int32 (B, H, width), contiguous: the picked page indices ascending, then -1;
    and ``n`` int32 (B, H), the clamped count. Ties at the threshold go to the lower indices, so
    every backend picks the same pages; a -inf page is picked only when fewer than ``n`` pages
    score above -inf. No host synchronisation (capturable in a CUDA graph).
    """
    check_tensor("score", score, 3, "(batch, heads, pages)")
    check_dtype("score", score, (torch.float32,))
    if (
        not isinstance(count, Tensor)
        or count.dtype.is_floating_point
        or count.dtype.is_complex
        or count.dtype == torch.bool
    ):
        got = count.dtype if isinstance(count, Tensor) else type(count).__name__
        raise TypeError(f"count: expected an integer tensor, got {got}")
    if count.shape != score.shape[:2] or count.device != score.device:
        raise ValueError(
            f"count: expected shape {tuple(score.shape[:2])} on {score.device}, got "
            f"{tuple(count.shape)} on {count.device}"
        )
    check_int("width", width, 1)
    if resolve_backend(backend, score, (torch.float32,)) == "reference":
        return page_select_reference.select_pages(score, count, width)
    from attnsieve.kernels.page_select import select_pages

    return select_pages(score, count, width)


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
        backend: see the module docstring.

    A head's token target is min(budget_tokens, length) or min(ceil(ratio x length), length)
    (float32); it reads that many tokens' worth of whole pages, at least 1 (the current token's)
    and at most its page count, and every page when the target is its whole length. No host
    synchronisation (capturable in a CUDA graph).
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
        check_float("ratio", ratio, 0.0, 1.0)
    args = (lengths, page_count, page_size, budget_tokens, ratio)
    if resolve_backend(backend, lengths, (torch.int32,)) == "reference":
        return page_select_reference.page_budget(*args)
    from attnsieve.kernels.page_select import page_budget

    return page_budget(*args)


# ---- cumulative-mass thresholds -------------------------------------------------------------
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
        backend: see the module docstring.

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
    rows = (*probs.shape[:-1], 1)
    if isinstance(threshold, Tensor):
        if not threshold.is_floating_point() or threshold.device != probs.device:
            raise TypeError(
                f"threshold: expected a float tensor on {probs.device}, got {threshold.dtype} on "
                f"{threshold.device}"
            )
        _check_broadcasts("threshold", threshold, rows)
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold: expected a number or a float tensor, got {threshold!r:.80}")
    if valid is not None:
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool:
            got = valid.dtype if isinstance(valid, Tensor) else type(valid).__name__
            raise TypeError(f"valid: expected None or a bool tensor, got {got}")
        if valid.device != probs.device:
            raise ValueError(f"valid: expected device {probs.device}, got {valid.device}")
        _check_broadcasts("valid", valid, probs.shape)
    if resolve_backend(backend, probs, (torch.float32,)) == "reference":
        return mass_threshold_reference.mass_threshold(probs, threshold, valid)
    from attnsieve.kernels.mass_threshold import mass_threshold as run

    return run(probs, threshold, valid)


# ---- layouts ---------------------------------------------------------------------------------
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
        backend: see the module docstring (Triton for a CUDA ``verticals``).

    FlexPrefill's (arXiv 2502.20766) block plan in one pass (`attnsieve.kernels.line_mask`); the
    twin composes tensor ops. Positions are bottom-right aligned. No host synchronisation.
    """
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
    kwargs = dict(**sizes, band=band, extra=extra, extra_heads=extra_heads)
    if resolve_backend(backend, verticals, (torch.bool,)) == "reference":
        return line_mask_reference.line_block_mask(verticals, bands, **kwargs)
    from attnsieve.kernels.line_mask import line_block_mask as launch

    return launch(verticals, bands, **kwargs)


def _check_bool(name: str, t: object, shape: tuple[int | None, ...]) -> None:
    """A bool tensor of ``shape`` (None: B or H, any size)."""
    if not isinstance(t, Tensor) or t.dtype != torch.bool:
        got = t.dtype if isinstance(t, Tensor) else type(t).__name__
        raise TypeError(f"{name}: expected a torch.bool tensor, got {got}")
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


# ---- layout statistics ----------------------------------------------------------------------
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
