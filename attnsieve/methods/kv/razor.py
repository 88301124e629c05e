"""RazorAttention: full caches for retrieval heads, sink + window + one compensation token for the
rest (arXiv 2407.15891)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.checks import check_float, check_int, check_tensor, layer_keys
from attnsieve.methods.kv.base import (
    Kept,
    KVPolicy,
    KVView,
    check_target,
    pack,
    top_mask,
    valid_entries,
    window_attention,
)


@dataclass
class RazorAttention(KVPolicy):
    """RazorAttention (Tang et al., ICLR 2025, arXiv 2407.15891).

    Retrieval heads (echo and induction heads, 15 % of the heads in the paper:
    ``retrieval_ratio``) keep their whole cache. Every other head keeps its first ``sink`` (4)
    entries and its most recent ones up to its target, and the evicted entries are folded into
    one compensation token, the mean of their keys and of their values, which stands for all of
    them: attention adds log(count) to its logit (the paper's eq. 5). The budget (``budget`` or
    ``ratio``) sets the tokens kept by each non-retrieval head, sink included, where the paper's
    Algorithm 1 keeps its N0 sink tokens on top of a buffer of max(S0, N / C) recent ones: the
    default ``ratio`` 0.2 is our reading of C = 5, unverified, and S0 is not modelled.

    Retrieval heads are either given, ``retrieval_heads`` {layer: [KV head indices]} (the
    paper's way: found offline on repeated random tokens, ``attnsieve calibrate --model M
    --retrieval-heads PATH``, see `attnsieve.eval.retrieval_heads.retrieval_heads`), or
    guessed per layer from the view (refused where that rounds up to every KV head of the layer,
    as with one KV head): the ``retrieval_ratio`` of KV heads (rounded up) whose
    observation-window queries (``window`` 32) put the most attention on the entries a
    non-retrieval head would evict. ``compensation=False`` drops the evicted tokens without a
    compensation token (the paper's ablation).

    Differences from the paper: the view heuristic stands in for the offline echo/induction
    scores when no list is given; the ratio counts KV heads per layer (GQA: a KV head is one
    head), not query heads of the whole model. The compensation token is returned through
    `Kept.extra_keys` / ``extra_values`` / ``extra_weight`` / ``extra_positions`` (weight 0:
    none); the cache stores it at the position of the last token it replaces, with log(weight)
    for attention to add. A later compression evicts it with the tokens that left the window
    since and folds it into the new one by its weight, so a head holds one compensation token,
    the mean of every token it ever evicted. The decode kernel and prompt chunks count its
    weight; decode selectors, whose bounds and scores would see it as one token, always read its
    page (`PageView.weighted_pages`).
    """

    sink: int = 4
    retrieval_ratio: float = 0.15
    retrieval_heads: dict[int, list[int]] | None = None
    window: int = 32
    compensation: bool = True

    name: ClassVar[str] = "razor"
    default_budget: ClassVar[int | None] = None
    default_ratio: ClassVar[float | None] = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("sink", self.sink, 0)
        if not isinstance(self.compensation, bool):
            raise TypeError(f"compensation: expected a bool, got {self.compensation!r}")
        check_float("retrieval_ratio", self.retrieval_ratio, 0.0, 1.0)
        check_int("window", self.window, 1)
        if self.retrieval_heads is not None:
            if not isinstance(self.retrieval_heads, dict):
                raise TypeError(
                    f"retrieval_heads: expected a dict {{layer: [head, ...]}} or None, "
                    f"got {type(self.retrieval_heads).__name__}"
                )
            # JSON object keys are strings: digit strings name layers, as in AttentionConfig
            self.retrieval_heads = layer_keys("retrieval_heads", self.retrieval_heads)
            for layer, heads in self.retrieval_heads.items():
                if not isinstance(heads, (list, tuple)):
                    raise TypeError(
                        f"retrieval_heads[{layer}]: expected a list of KV head indices, "
                        f"got {heads!r}"
                    )
                for head in heads:
                    check_int(f"retrieval_heads[{layer}]", head, 0)

    def choose(self, view: KVView) -> Kept:
        return self.keep(view, self.targets(view))

    def keep(self, view: KVView, target: Tensor) -> Kept:
        """`choose` at a given target, int64 (B, H_kv), each at most its head's length: the tokens
        each non-retrieval head keeps, sink included (a periodic pass's own, `PagedSession`)."""
        check_target(view, target)
        b, h, n = view.positions.shape
        valid = valid_entries(view)
        target = target[..., None]
        sinks = target.clamp(max=self.sink)
        index = torch.arange(n, device=view.keys.device)
        local = (index < sinks) | (index >= view.lengths[..., None] - (target - sinks))
        local &= valid
        retrieval = self._retrieval(view, local)
        keep = torch.where(retrieval[..., None], valid, local)
        kept = pack(keep, n)
        if not self.compensation:
            return kept

        # the compensation token: the mean of what is evicted, each entry counted by its weight
        # (an earlier compensation token stands for all the tokens it replaced)
        evicted = valid & ~keep
        each = torch.ones_like(evicted, dtype=torch.float32)
        if view.log_weights is not None:
            each = view.log_weights.exp()
        each = torch.where(evicted, each, 0.0)  # where, not a product: padding may hold NaN
        weight = each.sum(2, keepdim=True)  # (B, H, 1)

        def mean(x: Tensor) -> Tensor:
            total = torch.where(evicted[..., None], x.float() * each[..., None], 0.0).sum(2)
            return (total[:, :, None] / weight.clamp(min=1e-30)[..., None]).to(x.dtype)

        # it takes the place of the last entry it replaces: between the sink and the window
        last = torch.where(evicted, view.positions, -1).amax(2, keepdim=True)
        return Kept(kept.idx, kept.count, mean(view.keys), mean(view.values), weight, last)

    def check_layer(self, layer: int, kv_heads: int | None, num_layers: int | None) -> None:
        """The given retrieval heads name layers of the model and KV heads of ``layer``."""
        super().check_layer(layer, kv_heads, num_layers)
        if self.retrieval_heads is None:
            return
        beyond = [i for i in self.retrieval_heads if num_layers is not None and i >= num_layers]
        if beyond:
            raise ValueError(
                f"retrieval_heads: layers {beyond} past the model's {num_layers} layers"
            )
        heads = self.retrieval_heads.get(layer, [])
        if kv_heads is not None and any(head >= kv_heads for head in heads):
            raise ValueError(
                f"retrieval_heads[{layer}]: expected KV head indices < {kv_heads}, got {heads}"
            )

    def _retrieval(self, view: KVView, local: Tensor) -> Tensor:
        """bool (B, H_kv): the heads that keep everything."""
        b, h, _ = local.shape
        if self.retrieval_heads is not None:
            self.check_layer(view.layer, h, view.num_layers)
            heads = self.retrieval_heads.get(view.layer, [])
            mask = torch.zeros(h, dtype=torch.bool, device=local.device)
            mask[torch.tensor(heads, dtype=torch.long, device=local.device)] = True
            return mask.expand(b, h)
        remote = (window_attention(view, self.window) * ~local[:, :, None]).sum(-1).mean(2)
        count = math.ceil(self.retrieval_ratio * h - 1e-9)
        if count == h and self.retrieval_ratio < 1:
            raise ValueError(
                f"retrieval_heads: expected a list for a layer of {h} KV head(s): the guess keeps "
                f"{self.retrieval_ratio:g} of them rounded up, every one, so nothing would be "
                f"compressed; find them with `attnsieve calibrate --model M --retrieval-heads PATH`"
            )
        return top_mask(remote, torch.full_like(view.lengths[:, 0], count), count)


def echo_induction_scores(probs: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Offline retrieval-head scores of RazorAttention: the attention of each head on a sequence of
    random tokens repeated (the paper's probe), ``probs`` (B, H, N, N) (query, key), ``tokens``
    int (B, N). Returns the (B, H) echo scores (mean attention mass a query puts on earlier
    occurrences of its own token) and induction scores (mass on the tokens that followed them),
    each averaged over the queries that have an earlier occurrence."""
    check_tensor("probs", probs, 4, "(batch, heads, queries, keys)")
    b, _, n, m = probs.shape
    if n != m:
        raise ValueError(f"probs: expected as many queries as keys, got shape {tuple(probs.shape)}")
    if not isinstance(tokens, Tensor):
        raise TypeError(f"tokens: expected a torch.Tensor, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens: expected an integer tensor of token ids, got {tokens.dtype}")
    if tuple(tokens.shape) != (b, n) or tokens.device != probs.device:
        # a (1, N) row was broadcast over a batch of probs: one sequence's tokens scored every row
        raise ValueError(
            f"tokens: expected shape {(b, n)} on {probs.device} (probs' batch and length), got "
            f"{tuple(tokens.shape)} on {tokens.device}"
        )
    same = tokens[:, :, None] == tokens[:, None, :]  # (B, N query, N key)
    earlier = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)
    echo = same & earlier
    induction = torch.zeros_like(echo)
    induction[:, :, 1:] = echo[:, :, :-1]  # key j follows an earlier occurrence j - 1 < i

    def mass(mask: Tensor) -> Tensor:
        hit = mask.any(-1)  # (B, N): queries with a target
        per_query = (probs.float() * mask[:, None]).sum(-1)
        return (per_query * hit[:, None]).sum(-1) / hit.sum(-1).clamp(min=1)[:, None]

    return mass(echo), mass(induction)
