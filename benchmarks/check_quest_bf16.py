"""How often bfloat16 page summaries (rounded outward, as the cache keeps them) change the pages
Quest picks on SmolLM2, against float32 summaries (CPU, the real model).

For one sample of each task at ``--length`` tokens, every layer's last query ranks the 16-token
pages of each KV head by Quest's bound from exact float32 key min / max and from their bfloat16
rounding (`attnsieve.cache_reference.round_bf16`), and keeps the top ``--ratio`` of them; the
script prints how many picked pages differ.

    PYTHONPATH=. python3 benchmarks/check_quest_bf16.py [--length 2048 --ratio 0.125]
"""

from __future__ import annotations

import argparse

import torch

from attnsieve.api import quest_page_scores, select_pages
from attnsieve.cache_reference import round_bf16
from attnsieve.eval.calibrate import capture_qk
from attnsieve.eval.models import load_model
from attnsieve.eval.tasks import make_samples

PAGE = 16


def picks(q: torch.Tensor, k: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Quest's pages of every KV head for query ``q`` (B, H_q, D) over keys k (B, H_kv, N, D),
    from float32 and from bfloat16 summaries: two int32 (B, H_kv, width) lists."""
    b, hk, n, d = k.shape
    p = n // PAGE
    pages = k[:, :, : p * PAGE].float().view(b, hk, p, PAGE, d)
    low, high = pages.amin(3), pages.amax(3)
    table = torch.arange(b * hk * p, dtype=torch.int32).view(b, hk, p)
    count = torch.full((b, hk), p, dtype=torch.int32)
    width = max(1, int(p * ratio))
    out = []
    for lo, hi in ((low, high), (round_bf16(low, up=False), round_bf16(high, up=True))):
        score = quest_page_scores(q.float(), lo.reshape(-1, d), hi.reshape(-1, d), table, count)
        out.append(select_pages(score, torch.full((b, hk), width), width)[0])
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--ratio", type=float, default=0.125)
    args = parser.parse_args()
    model, tokenizer, _ = load_model("smollm2", device="cpu", dtype="auto")
    moved = total = 0
    for task in ("niah_single", "passkey"):
        text = make_samples(task, tokenizer, args.length, 1, 0, answer_room=False)[0].prompt
        ids = torch.tensor([list(tokenizer.encode(text))])[:, : args.length]
        for q, k in capture_qk(model, ids).values():
            exact, rounded = picks(q[:, :, -1], k, args.ratio)
            for a, c in zip(exact.flatten(0, 1).tolist(), rounded.flatten(0, 1).tolist(),
                            strict=True):  # fmt: skip
                moved += len(set(a) - set(c))
                total += len(a)
    print(
        f"{args.length} tokens, ratio {args.ratio}: bfloat16 summaries change {moved} of the "
        f"{total} pages Quest picks ({100 * moved / total:.2f} %)"
    )


if __name__ == "__main__":
    main()
