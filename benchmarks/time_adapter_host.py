"""Host time the adapter adds to a layer that runs dense (no GPU needed; on one, its host).

Calls transformers' ``sdpa_attention_forward`` and the adapter's attention function on a small
SmolLM2-shaped input (9 query / 3 KV heads, d 64), where SDPA itself is cheap, and prints the
difference per call for the two dense paths: below ``min_prefill_length`` (no cost decision) and
through the cost model (the Triton backend, so the cost model decides). On CUDA the calls are not
synchronised: a short input keeps the GPU ahead of the host, so the time is the host's.

    PYTHONPATH=. python3 benchmarks/time_adapter_host.py [--device cuda --tokens 128]
"""

from __future__ import annotations

import argparse
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


def best_us(fns: dict, calls: int, rounds: int, sync) -> dict:
    """Best microseconds per call of each function, timed in interleaved rounds (load on the
    machine weighs on all of them alike)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (torch.randn(1, h, args.tokens, 64, device=device, dtype=dtype) for h in (9, 3, 3))
    kwargs = {"scaling": 0.125, "dropout": 0.0, "softcap": None, "sliding_window": None}
    costed, short = layer(8), layer(1 << 30)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    us = best_us({
        "stock": lambda: sdpa_attention_forward(costed, q, k, v, None, **kwargs),
        "direct": lambda: adapter.attention_forward(short, q, k, v, None, **kwargs),
        "cost": lambda: adapter.attention_forward(costed, q, k, v, None, **kwargs),
        "bare": lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, scale=0.125, is_causal=True, enable_gqa=True
        ),
    }, args.calls, 7, sync)  # fmt: skip
    print(f"{device.type}, {args.tokens} tokens: bare SDPA {us['bare']:.1f} us/call, "
          f"transformers sdpa {us['stock']:.1f}; the adapter adds "
          f"{us['direct'] - us['stock']:+.1f} us below min_prefill_length, "
          f"{us['cost'] - us['stock']:+.1f} us through the cost model")  # fmt: skip


if __name__ == "__main__":
    main()
