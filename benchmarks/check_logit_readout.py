"""Why flexprefill's last-position logits read 0.74 from SDPA's at 1M tokens and 0.13 at 512K
(relative L2, `bench e2e`) while its hidden states drift alike at both lengths
(`check_full_budget_drift.py`): the stock logits' size and common offset, the next-token
distribution's entropy, and the drift as mean-centred relative L2, KL(SDPA || flexprefill) and
shared top-5 tokens. Session 39 ran the same computations, written inline, as a scratch file
(`long39/logit_readout.log`); this is it tidied.

    ATTNSIEVE_SMOLLM2_GGUF=PATH PYTHONPATH=. python3 benchmarks/check_logit_readout.py
"""

import torch

from attnsieve.bench.common import next_token_kl, rel_err
from attnsieve.bench.e2e import prompt_ids
from attnsieve.eval.models import load_model
from attnsieve.integrations import AttentionConfig, patch
from benchmarks.check_full_budget_drift import last_logits


def readout(stock: torch.Tensor, ours: torch.Tensor) -> str:
    """The stock logits' shape of distribution and how far ``ours`` moves it."""
    probs = stock.softmax(-1)
    entropy = float(-(probs * stock.log_softmax(-1)).sum())
    top5 = set(stock.topk(5).indices[0].tolist()) & set(ours.topk(5).indices[0].tolist())
    return (
        f"SDPA logits norm {float(stock.norm()):.1f}, std {float(stock.std()):.2f}, mean "
        f"{float(stock.mean()):.2f}, top-1 p {float(probs.max()):.3f}, entropy {entropy:.2f} nats; "
        f"flexprefill logits norm {float(ours.norm()):.1f}, rel err {rel_err(ours, stock):.3f} "
        f"(mean-centred {rel_err(ours - ours.mean(), stock - stock.mean()):.3f}), "
        f"KL(SDPA||flexprefill) {next_token_kl(ours, stock):.4f} nats, top-5 shared {len(top5)}/5"
    )


def main() -> None:
    config = AttentionConfig(prefill="flexprefill")
    for length, factor in ((524288, 64), (1048576, 128)):
        model, tokenizer, _ = load_model(
            "smollm2", device="cuda", dtype="bfloat16", rope_scale=float(factor)
        )
        ids = prompt_ids(tokenizer, model, length, 0, torch.device("cuda"))
        last_logits(model, ids[:, :4096])  # warm-ups
        with patch(model, config, cost=None, graphs=False):
            last_logits(model, ids[:, :4096])
        stock = last_logits(model, ids)[0]
        with patch(model, config, cost=None, graphs=False):
            ours = last_logits(model, ids)[0]
        print(f"{ids.shape[1]} tokens, YaRN x{factor}: {readout(stock, ours)}", flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
