"""Public ops: the one place that picks a backend for each op (Triton, the reference twin or SDPA),
in three modules re-exported here: `attnsieve.api.prefill`, `attnsieve.api.decode` and
`attnsieve.api.planning`.

- `attention`: prefill attention restricted to a `Layout` (dense when None).
- `dense_attention`: dense attention with transformers' "sdpa" mask conventions and logit
  soft-capping (the fallback of the transformers adapter).
- `decode_attention`: one query token per sequence over a paged `Cache` layer, optionally
  restricted to a list of pages (sparse decode).
- Planning estimates (`block_mean_pool`, `block_mean_pool_qk`, `pooled_block_probs`,
  `antidiagonal_block_scores`, `last_query_stats`): the inner steps of planners.
- `quest_page_scores`: the page scores by which Quest picks the pages a decode step reads.
- `select_pages`: the ascending lists of each row's top-``count`` pages by a score; `top_mask`:
  the same selection as a mask (FlexPrefill's key blocks and diagonals).
- `mass_threshold`: each row's largest entries holding a fraction of its mass (the cumulative
  thresholds of FlexPrefill, XAttention and SpargeAttn), without a sort.
- `choose_lines`: FlexPrefill's query-aware heads and its verticals' and slashes' key blocks, in
  one launch.
- `page_budget`: the pages each head of a decode step reads under a selector's token budget.
- `line_block_mask`: the block mask of chosen key blocks and diagonal bands (FlexPrefill's
  vertical-slash selection), `line_block_layout` its layout in one launch; `block_layout`: a
  layout from a block mask; `line_layout`:
  MInference's vertical-slash layout from its key columns and diagonals; `layout_density`: a
  layout's computed pairs over dense attention's, per batch and head.

Backends: "auto" (default) runs Triton for float16/bfloat16 CUDA tensors (`quest_page_scores`:
any CUDA query, it computes in float32 either way; `pooled_block_probs`, `select_pages`,
`top_mask`, `mass_threshold`, `choose_lines`: float32 CUDA inputs; `line_block_mask`,
`line_block_layout`, `block_layout`, `layout_density`: a CUDA mask or layout; `line_layout`:
CUDA columns; `page_budget`: CUDA lengths) and the PyTorch reference twin elsewhere; "triton"
or "reference" (argument or $ATTNSIEVE_BACKEND) forces one. "triton" on CPU needs
TRITON_INTERPRET=1 set before triton is imported.
"""

from attnsieve.api.backend import BACKENDS, resolve_backend
from attnsieve.api.decode import (
    decode_attention,
    page_budget,
    quest_page_scores,
    select_pages,
    top_mask,
)
from attnsieve.api.planning import (
    antidiagonal_block_scores,
    block_layout,
    block_mean_pool,
    block_mean_pool_qk,
    choose_lines,
    last_query_stats,
    layout_density,
    line_block_layout,
    line_block_mask,
    line_layout,
    mass_threshold,
    pooled_block_probs,
)
from attnsieve.api.prefill import PRECISIONS, attention, dense_attention

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "antidiagonal_block_scores",
    "attention",
    "block_layout",
    "block_mean_pool",
    "block_mean_pool_qk",
    "choose_lines",
    "decode_attention",
    "dense_attention",
    "last_query_stats",
    "layout_density",
    "line_block_layout",
    "line_block_mask",
    "line_layout",
    "mass_threshold",
    "page_budget",
    "pooled_block_probs",
    "quest_page_scores",
    "resolve_backend",
    "select_pages",
    "top_mask",
]
