"""RazorAttention's retrieval heads (arXiv 2407.15891, section 3.2): the echo and induction heads
of a transformers model (`retrieval_heads`), scored on random tokens repeated
(`repeated_random_tokens`). ``attnsieve calibrate --model M --retrieval-heads PATH``
(`attnsieve.eval.calibrate`) writes them as the KV-policy entry of `attnsieve.methods.kv.razor`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from attnsieve.checks import check_float


def retrieval_heads(
    model: Any,
    tokens: Tensor,
    *,
    echo: float = 0.01,
    induction: float = 0.14,
) -> tuple[dict[int, list[int]], Tensor, Tensor]:
    """RazorAttention's retrieval heads of a transformers ``model``: the ``echo`` fraction of its
    KV heads (the paper's 1 %) of highest echo score and the ``induction`` fraction (14 %) of
    highest induction score, on ``tokens`` int (1, N), a random sequence repeated (see
    `attnsieve.methods.kv.echo_induction_scores`). The paper ranks query heads; a KV head here
    scores the most any of its query heads does (it must keep everything for that head).

    Returns ({layer: [KV heads]}, echo and induction scores float32 (layers, KV heads))."""
    from attnsieve.integrations.transformers import observe_attention
    from attnsieve.methods.kv import echo_induction_scores

    check_float("echo", echo, 0.0, 1.0)
    check_float("induction", induction, 0.0, 1.0)
    scores: dict[int, tuple[Tensor, Tensor]] = {}

    def keep(module: Any, query: Tensor, key: Tensor, value: Tensor, scaling: Any) -> None:
        b, h_q, n, d = query.shape
        g = h_q // key.shape[1]
        logits = query.float().view(b, -1, g, n, d) @ key.float()[:, :, None].transpose(-1, -2)
        logits = logits * (d**-0.5 if scaling is None else scaling)
        causal = torch.ones(n, n, dtype=torch.bool, device=query.device).tril()
        probs = logits.masked_fill(~causal, -torch.inf).softmax(-1).flatten(1, 2)
        per_query = echo_induction_scores(probs, tokens.to(query.device))
        scores[module.layer_idx] = tuple(s.view(-1, g).amax(-1).cpu() for s in per_query)

    with observe_attention(model, keep), torch.no_grad():
        model(input_ids=tokens.to(model.device), use_cache=False)
    echo_scores, induction_scores = (
        torch.stack([scores[i][j] for i in sorted(scores)]) for j in (0, 1)
    )
    picked = torch.zeros_like(echo_scores, dtype=torch.bool)
    for ratio, score in ((echo, echo_scores), (induction, induction_scores)):
        count = math.ceil(ratio * score.numel() - 1e-9)
        picked.view(-1)[score.flatten().topk(count).indices] = True
    layers = sorted(scores)  # the models' own layer indices
    heads = {
        layer: row.nonzero().flatten().tolist() for layer, row in zip(layers, picked, strict=True)
    }
    return {layer: h for layer, h in heads.items() if h}, echo_scores, induction_scores


def repeated_random_tokens(
    tokenizer: Any, period: int = 256, repeats: int = 4, seed: int = 0
) -> Tensor:
    """int (1, period x repeats): ``period`` random ordinary tokens of the tokenizer's vocabulary
    (special tokens left out), ``repeats`` times over: the probe on which echo heads attend to the
    earlier copy of the current token and induction heads to the token that followed it."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    # tokenizers without all_special_ids (the probe's bytes) still name their BOS, EOS and PAD
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        if isinstance(getattr(tokenizer, name, None), int):
            special.add(getattr(tokenizer, name))
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    gen = torch.Generator().manual_seed(seed)
    block = ordinary[torch.randperm(len(ordinary), generator=gen)[:period]]  # no repeats inside
    return block.repeat(repeats)[None]
