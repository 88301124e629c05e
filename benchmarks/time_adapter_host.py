"""Host time the adapter adds to a layer that runs dense, on the CPU (no GPU needed).

Calls transformers' ``sdpa_attention_forward`` and the adapter's attention function on a tiny
SmolLM2-shaped input (9 query / 3 KV heads, 16 tokens, d 64), where SDPA itself is cheap, and
prints the difference per call for the two dense paths: below ``min_prefill_length`` (no cost
decision) and through the cost model (Triton backend requested, so the cost model decides).

    PYTHONPATH=. python3 benchmarks/time_adapter_host.py
"""

from __future__ import annotations

import time

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from attnsieve.integrations import AttentionConfig
from attnsieve.integrations import transformers as adapter


def layer(min_prefill_length: int) -> torch.nn.Module:
    module = torch.nn.Module()
    module.layer_idx, module.is_causal, module.num_key_value_groups = 3, True, 3
    config = AttentionConfig(
        prefill="flexprefill", backend="triton", min_prefill_length=min_prefill_length
    )
    setattr(module, adapter._HANDLE_ATTR, adapter.PatchHandle(config, 30, adapter.DEFAULT_COST))
    return module


def best_us(fns: dict, calls: int = 10000, rounds: int = 7) -> dict:
    """Best microseconds per call of each function, timed in interleaved rounds (load on the
    machine weighs on all of them alike)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e6)
    return best


def main() -> None:
    q, k, v = torch.randn(1, 9, 16, 64), torch.randn(1, 3, 16, 64), torch.randn(1, 3, 16, 64)
    kwargs = {"scaling": 0.125, "dropout": 0.0, "softcap": None, "sliding_window": None}
    costed, short = layer(8), layer(2048)
    us = best_us({
        "stock": lambda: sdpa_attention_forward(costed, q, k, v, None, **kwargs),
        "direct": lambda: adapter.attention_forward(short, q, k, v, None, **kwargs),
        "cost": lambda: adapter.attention_forward(costed, q, k, v, None, **kwargs),
    })  # fmt: skip
    print(f"transformers sdpa {us['stock']:.1f} us/call; the adapter adds "
          f"{us['direct'] - us['stock']:+.1f} us below min_prefill_length, "
          f"{us['cost'] - us['stock']:+.1f} us through the cost model")  # fmt: skip


if __name__ == "__main__":
    main()
