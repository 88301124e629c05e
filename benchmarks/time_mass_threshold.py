"""GPU timing of `mass_threshold`: the Triton threshold search vs its sort-based PyTorch twin.

Two shapes, float32 on CUDA: 32 × 1,048,576 (FlexPrefill's query-aware maps at 128K tokens,
Llama-3-8B: 32 heads × a causal 1024 × 1024 block map, flattened, gamma 0.9; the multi-pass
path) and 32,768 × 1,024 (XAttention / block_topk rows, a per-row threshold; the in-register
path). Each is checked first: the Triton mask must hold at least gamma of each row's mass and
differ from the twin's only where float sums round differently at the boundary (a handful of
entries); no speed-up is printed for a shape that fails. Then the median of triton.testing.do_bench
for both, the Triton op's read bandwidth (9 reads of probs on the long path, 1 on the short), a
host-sync check (torch's sync debug mode) and a CUDA-graph capture and replay.

    PYTHONPATH=. python3 benchmarks/time_mass_threshold.py
"""

from __future__ import annotations

import torch
from triton.testing import do_bench

from attnsieve.integrations.graphs import forbid_host_sync
from attnsieve.kernels import mass_threshold, mass_threshold_reference


def flexprefill_maps(heads: int = 32, blocks: int = 1024) -> torch.Tensor:
    """(heads, blocks²): a softmax over the visible key blocks of each query block, zeros above
    the diagonal (the shape and sparsity of `pooled_block_probs`)."""
    logits = torch.randn(heads, blocks, blocks, device="cuda") * 3
    visible = torch.ones(blocks, blocks, dtype=torch.bool, device="cuda").tril()
    return logits.masked_fill(~visible, -torch.inf).softmax(-1).flatten(1)


def check(name: str, probs: torch.Tensor, gamma) -> bool:
    got = mass_threshold.mass_threshold(probs, gamma)
    want = mass_threshold_reference.mass_threshold(probs, gamma)
    p = probs.double()
    target = torch.as_tensor(gamma, dtype=torch.float64, device=probs.device) * p.sum(-1, True)
    kept = (p * got).sum(-1, keepdim=True)
    # relative slack for float32 sums of up to 1M terms in different orders
    enough = bool((kept >= target * (1 - 1e-5)).all())
    differ = int((got != want).sum())
    ok = enough and differ <= 16 * probs.shape[0]
    print(
        f"{name}: {'ok  ' if ok else 'FAIL'} kept >= gamma·total: {enough}; entries differing "
        f"from the twin: {differ}; kept {int(got.sum())} of {probs.numel()}"
    )
    return ok


def sync_free_and_capturable(probs: torch.Tensor, gamma) -> str:
    try:
        with forbid_host_sync():
            mass_threshold.mass_threshold(probs, gamma)
        side = torch.cuda.Stream()  # warm-up off the default stream, as torch recommends
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            mass_threshold.mass_threshold(probs, gamma)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = mass_threshold.mass_threshold(probs, gamma)
        graph.replay()
        same = torch.equal(out, mass_threshold.mass_threshold(probs, gamma))
        return "no host sync, graph replay " + ("matches" if same else "DIFFERS")
    except RuntimeError as error:  # a sync or a capture failure
        return f"FAILED: {str(error).splitlines()[0]}"


def main() -> None:
    torch.manual_seed(0)
    short = torch.randn(32768, 1024, device="cuda").mul(2).softmax(-1)
    cases = [
        ("32 x 1048576, gamma 0.9", flexprefill_maps(), 0.9, 9),
        ("32768 x 1024, per-row gamma", short, torch.rand(32768, 1, device="cuda") * 0.9, 1),
    ]
    for name, probs, gamma, reads in cases:
        if not check(name, probs, gamma):
            continue
        tri = do_bench(lambda p=probs, g=gamma: mass_threshold.mass_threshold(p, g),
                       warmup=25, rep=200, return_mode="median")  # fmt: skip
        ref = do_bench(lambda p=probs, g=gamma: mass_threshold_reference.mass_threshold(p, g),
                       warmup=25, rep=200, return_mode="median")  # fmt: skip
        gbs = reads * probs.numel() * 4 / tri / 1e6
        print(
            f"{name}: triton {tri:.3f} ms ({gbs:.0f} GB/s of reads), twin (sort) {ref:.3f} ms, "
            f"speed-up {ref / tri:.1f}x; {sync_free_and_capturable(probs, gamma)}"
        )


if __name__ == "__main__":
    main()
