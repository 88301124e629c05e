"""What `attnsieve bench kernels` draws its inputs from and checks its rows against: random causal
block layouts of a target density, SDPA by backend, and the exact float32 reference on sampled
query blocks (a check that needs no other backend and no N × M memory)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from attnsieve.bench.common import sampled_blocks
from attnsieve.checks import cdiv
from attnsieve.layout import Layout

CHECK_BLOCKS = 8  # query blocks on which sparse rows are checked against the float32 reference


@dataclass
class SampledReference:
    """The float32 reference output of a layout on sampled query rows (all heads, every key)."""

    rows: Tensor  # int64 (R,): the query rows, ascending
    out: Tensor  # float32 (B, H_q, R, D)


def sampled_reference(
    q: Tensor, k: Tensor, v: Tensor, layout: Layout, blocks: int = CHECK_BLOCKS
) -> SampledReference:
    """`attention_reference` (exact, float32) of ``layout`` on ``blocks`` query blocks spread
    evenly over the sequence (`attnsieve.bench.common.sampled_blocks`): a check that needs no
    other backend (FlexAttention may be skipped) and costs (block_q × M) scores per head and
    block, not a dense attention."""
    from attnsieve.kernels.prefill_reference import attention_reference

    rows, outs = [], []
    for r0, r1, sub in sampled_blocks(layout, blocks):
        m_sub = sub.num_keys
        sub_qkv = q[:, :, r0:r1].float(), k[:, :, :m_sub].float(), v[:, :, :m_sub].float()
        outs.append(attention_reference(*sub_qkv, sub))
        rows.append(torch.arange(r0, r1, device=q.device))
    return SampledReference(torch.cat(rows), torch.cat(outs, dim=2))


def on_reference_rows(out: Tensor, ref: Tensor | SampledReference) -> tuple[Tensor, Tensor]:
    """``out`` and ``ref`` on the rows ``ref`` holds: all of them, or a `SampledReference`'s."""
    if isinstance(ref, SampledReference):
        return out[:, :, ref.rows], ref.out
    return out, ref


def min_head_cosine(out: Tensor, ref: Tensor) -> float:
    """Smallest cosine similarity over (batch, head) of two (B, H, N, D) outputs, in float32."""
    cos = [
        torch.nn.functional.cosine_similarity(o.float().flatten(1), r.float().flatten(1), dim=-1)
        for o, r in zip(out, ref, strict=True)  # one batch element at a time: less memory
    ]
    return float(torch.cat(cos).min())


def random_causal_layout(
    n: int, heads: int, block: int, density: float, device: torch.device, gen: torch.Generator
) -> Layout:
    """Per-head random causal block layout of about ``density``; diagonal and sink blocks kept."""
    nb = cdiv(n, block)
    scores = torch.rand(1, heads, nb, nb, device=device, generator=gen)
    diag = torch.arange(nb, device=device)
    scores[..., diag, diag] = math.inf
    scores[..., 0] = math.inf
    return Layout.from_topk(
        scores,
        _blocks_for_density(nb, density),
        block_q=block,
        block_k=block,
        num_queries=n,
        num_keys=n,
        causal=True,
    )


def _blocks_for_density(nb: int, density: float) -> int:
    """Blocks per query-block row whose causal pair fraction is closest to ``density``."""
    per_row = torch.arange(1, nb + 1, dtype=torch.float64)  # visible blocks of each row
    ks = torch.arange(1, nb + 1, dtype=torch.float64)[:, None]
    # a diagonal block holds about half a block of causal pairs
    frac = (torch.minimum(ks, per_row) - 0.5).sum(1) / (per_row - 0.5).sum()
    return int((frac - density).abs().argmin()) + 1


def sdpa_call(q: Tensor, k: Tensor, v: Tensor, backend: str) -> Callable[[], Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run() -> Tensor:
        with sdpa_kernel(getattr(SDPBackend, backend)):
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1]
            )

    return run
