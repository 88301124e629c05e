"""Why KV policies lose retrieval on SmolLM2: which of the needle's tokens each (layer, KV head)
keeps after compression, under both protocols: the question prefilled after compression
(kvpress's, ``attnsieve eval``'s default) or before it (in the policy's observation window,
``eval --question-in-window``). A head keeps the needle "whole", "none", with a "gap" (tokens
missing between kept ones: the number is copied with a digit left out) or cut at an "edge". CPU is
enough at 4K. ``--policies`` takes policy names and KV-entry JSON files (labelled by their stem).

    PYTHONPATH=. python3 benchmarks/check_kv_protocol.py --policies snapkv,adakv --length 4096 \\
        --samples 20 --tasks niah_single --protocols before --out OUT
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch

from attnsieve.eval.harness import split_question
from attnsieve.eval.models import load_model
from attnsieve.eval.tasks import answer_budget, make_samples
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.integrations.generate import eos_token_ids, generate

PROTOCOLS = {"after": "question after compression", "before": "question in the window"}
KINDS = ("whole", "gap", "edge", "none")


def needle_kinds(paged, ids: list[int], target: list[int]) -> list[str] | None:
    """Per layer, one letter a KV head (w whole, g gap, e edge, n none) for the first occurrence
    of ``target`` in ``ids``; None when the prompt does not hold it."""
    starts = [i for i in range(len(ids) - len(target) + 1) if ids[i : i + len(target)] == target]
    if not starts:
        return None
    want = torch.arange(starts[0], starts[0] + len(target))
    rows = []
    for layer in range(paged.num_layers):
        query = torch.zeros(paged.batch, paged.kv_heads, 1, paged.head_dim, device=paged.device)
        at = torch.zeros(paged.batch, 1, dtype=torch.long, device=paged.device)
        positions = paged.kv_view(layer, query.to(paged.dtype), at).positions[0].cpu()
        kept = (positions[:, :, None] == want).any(1)  # (H_kv, T)
        rows.append("".join(_kind(k.tolist())[0] for k in kept))
    return rows


def _kind(kept: list[bool]) -> str:
    if all(kept):
        return "whole"
    if not any(kept):
        return "none"
    first, last = kept.index(True), len(kept) - 1 - kept[::-1].index(True)
    return "gap" if not all(kept[first : last + 1]) else "edge"


def _policies(text: str) -> dict[str, dict]:
    out = {}
    for item in text.split(","):
        path = Path(item)
        out[path.stem if path.suffix == ".json" else item] = (
            json.loads(path.read_text()) if path.suffix == ".json" else {"method": item}
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default="snapkv")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default="passkey,niah_single")
    parser.add_argument("--protocols", default="after,before", help="after, before or both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="folder for needle_retention.json")
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    if not set(protocols) <= set(PROTOCOLS):
        parser.error(f"--protocols: expected some of {sorted(PROTOCOLS)}, got {args.protocols}")
    dtype = "float32" if args.device == "cpu" else "bfloat16"
    model, tok, _ = load_model("smollm2", device=args.device, dtype=dtype)
    eos = eos_token_ids(model, tok)
    cells = []
    for label, entry in _policies(args.policies).items():
        kv = {**entry, "ratio": args.ratio}
        handle = patch(model, AttentionConfig(prefill="dense", kv=kv), cost=None)
        with handle:
            for task in args.tasks.split(","):
                samples = make_samples(task, tok, args.length, args.samples, args.seed)
                for protocol in protocols:
                    cell = {"policy": label, "kv": kv, "task": task, "protocol": protocol}
                    cell |= {"length": args.length, "scores": [], "predictions": [], "heads": []}
                    for s in samples:
                        ids = torch.tensor([list(tok.encode(s.prompt))], device=model.device)
                        context = len(tok.encode(split_question(s.prompt)[0]))
                        split = context if protocol == "after" else ids.shape[1]
                        tokens, *_ = generate(
                            model, ids, answer_budget(tok, s.target), ids.shape[1], eos,
                            handle.stats, handle.new_cache(), split, handle.compress,
                        )  # fmt: skip
                        text = tok.decode(
                            [t for t in tokens if t not in eos], skip_special_tokens=True
                        )
                        target = tok.encode(s.target, add_special_tokens=False)
                        cell["scores"].append(s.score(text))
                        cell["predictions"].append(text)
                        cell["heads"].append(
                            needle_kinds(handle.session.paged, ids[0].tolist(), target)
                        )
                    found = [h for h in cell["heads"] if h is not None]
                    letters = collections.Counter("".join("".join(h) for h in found))
                    total = sum(letters.values()) or 1
                    cell["accuracy"] = sum(cell["scores"]) / len(samples)
                    cell["share"] = {k: letters[k[0]] / total for k in KINDS}
                    cells.append(cell)
                    share = ", ".join(f"{k} {v:.2f}" for k, v in cell["share"].items())
                    name = f"{label}@{args.ratio:g} {task} {args.length} {PROTOCOLS[protocol]}"
                    print(f"{name}: accuracy {cell['accuracy']:.2f}; needle in heads: {share}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"command": "benchmarks/check_kv_protocol.py", "args": vars(args) | {"out": None}}
        (args.out / "needle_retention.json").write_text(
            json.dumps({**meta, "cells": cells}, indent=1, default=str)
        )


if __name__ == "__main__":
    main()
