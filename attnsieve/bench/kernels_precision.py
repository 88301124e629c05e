"""The low-precision rows of `attnsieve bench kernels` (``--precision int8-fp8``).

Dense causal at ``--quant-lengths`` through cuDNN bf16, our bf16 kernel, our INT8·FP8 kernel
(`attnsieve.kernels.quant`) and SageAttention (its Triton release, INT8 Q·Kᵀ / FP16 P·V, when
``import sageattention`` works); a random block layout of ``--quant-density`` at
``--quant-sparse-lengths`` through our bf16 and INT8·FP8 kernels on the same layout. Each output
must reach a per-head cosine similarity of ``MIN_COSINE`` with the reference (bf16 SDPA dense; the
float32 reference on sampled query blocks sparse) before it is timed (on ``--copies`` copies of
its inputs, as every `bench kernels` row). INT8·FP8 times include
quantising Q, K and V; what runs before the kernel is also timed on its own (quant_ms): the pass
over K and V, and over Q for the Triton kernel (the Hopper one quantises Q itself); ``kernel``
names the INT8·FP8
kernel that ran (`attnsieve.kernels.quant_hopper` on an sm_90 GPU where it applies, else Triton's).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
from collections.abc import Callable
from functools import partial

import torch

from attnsieve.bench.baselines import (
    min_head_cosine,
    on_reference_rows,
    random_causal_layout,
    sampled_reference,
    sdpa_call,
)
from attnsieve.bench.common import (
    attention_tflops,
    median_ms,
    on_inputs,
    rel_err,
    time_on_copies,
)
from attnsieve.layout import Layout
from attnsieve.layout_counts import causal_pairs

MIN_COSINE = 0.999  # per head, low-precision output vs the bf16 reference

QUANT_COLUMNS = [
    "N",
    "method",
    "precision",
    "density",
    "ms",
    "quant_ms",
    "tflops",
    "vs_bf16",
    "vs_sage",
    "cosine",
    "rel_err",
    "status",
    "kernel",
]


def bench_precision(args: argparse.Namespace, bar, dev: torch.device) -> list[dict]:
    """INT8·FP8 rows beside their bf16 baselines (cuDNN dense, our bf16 kernel sparse).

    TF/s count the FLOPs of the attention computed (4 * B * H_q * D * causal pairs, times the
    density), whatever the precision, so rows compare as throughput on the same work.
    """
    from attnsieve.kernels.prefill import sparse_attention
    from attnsieve.kernels.quant import quant_attention, quantize_for_kernel, runs_hopper_kernel

    sage = _sageattn()
    b, h, h_kv, d, blk = args.batch, args.heads, args.kv_heads, args.head_dim, args.block
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    rows: list[dict] = []

    def kernel_name(q, k, layout):
        return "gluon-sm90" if runs_hopper_kernel(q, k, layout, True) else "triton"

    def record(n, inputs, method, precision, make_call, density, target, ref, extra_ms=None):
        """Check ``make_call(*inputs)`` against ``ref`` (per-head cosine), time it on ``--copies``
        copies of the inputs (``extra_ms``, the quantisation pass, on the inputs), append a
        row."""
        row = {"N": n, "method": method, "precision": precision, "density": density}
        row["density_target"] = target
        rows.append(row)
        bar.update()
        if make_call is None:
            row["status"] = "not installed"
            return
        if ref is None:  # nothing to check against: refuse to time
            row["status"] = "correctness failed (no reference)"
            return
        try:
            out = make_call(*inputs)()
            torch.cuda.synchronize()
        except Exception as exc:  # a backend missing on this GPU / torch is a result, not a crash
            row["status"] = f"error: {type(exc).__name__}: {str(exc)[:100]}"
            return
        got, want = on_reference_rows(out, ref)  # one gather of the sampled rows
        row["cosine"], row["rel_err"] = min_head_cosine(got, want), rel_err(got, want)
        del out, got
        if not row["cosine"] >= MIN_COSINE:
            row["status"] = "correctness failed"
            return
        if not time_on_copies(row, make_call, inputs, args.copies, args.rep_ms):
            return
        row["tflops"] = attention_tflops(row["ms"], b, h, d, density * causal_pairs(n, n))
        if extra_ms is not None:
            row["quant_ms"] = median_ms(extra_ms, rep_ms=args.rep_ms)

    def inputs(n):
        return [torch.randn(b, hh, n, d, device=dev, dtype=torch.bfloat16, generator=gen)
                for hh in (h, h_kv, h_kv)]  # fmt: skip

    def dense_rows(n):
        q, k, v = qkv = inputs(n)
        layout = Layout.dense(n, n, block_q=blk, block_k=blk, causal=True, device=dev)
        ref = None
        for backend in ("FLASH_ATTENTION", "CUDNN_ATTENTION"):
            with contextlib.suppress(RuntimeError):
                ref = ref if ref is not None else sdpa_call(q, k, v, backend)()
        cudnn = partial(sdpa_call, backend="CUDNN_ATTENTION")
        record(n, qkv, "sdpa-cudnn", "bf16", cudnn, 1.0, None, ref)
        bf16 = on_inputs(sparse_attention, layout, dense_dispatch=False)
        record(n, qkv, "attnsieve-triton", "bf16", bf16, 1.0, None, ref)
        quantize = partial(quantize_for_kernel, q, k, v, None, True)
        low = on_inputs(quant_attention)
        record(n, qkv, "attnsieve", "int8-fp8", low, 1.0, None, ref, extra_ms=quantize)
        rows[-1]["kernel"] = kernel_name(q, k, None)
        sage_call = None if sage is None else on_inputs(sage, "HND", is_causal=True)
        record(n, qkv, "sageattention", "int8-fp16", sage_call, 1.0, None, ref)

    def sparse_rows(n):  # the same random block layout through both precisions
        q, k, v = qkv = inputs(n)
        layout = random_causal_layout(n, h, blk, args.quant_density, dev, gen)
        density, target = layout.density(causal=True), args.quant_density
        ref = sampled_reference(q, k, v, layout)
        bf16 = on_inputs(sparse_attention, layout)
        record(n, qkv, "attnsieve", "bf16", bf16, density, target, ref)
        quantize = partial(quantize_for_kernel, q, k, v, layout, True)
        low = on_inputs(quant_attention, layout)
        record(n, qkv, "attnsieve", "int8-fp8", low, density, target, ref, extra_ms=quantize)
        rows[-1]["kernel"] = kernel_name(q, k, layout)

    for n in args.quant_lengths:
        dense_rows(n)
        gc.collect()  # inputs and outputs of this length are gone: free them
        torch.cuda.empty_cache()
    for n in args.quant_sparse_lengths:
        sparse_rows(n)
        gc.collect()
        torch.cuda.empty_cache()
    _add_precision_speedups(rows, sage is not None)
    return rows


def _add_precision_speedups(rows: list[dict], have_sage: bool) -> None:
    """vs_bf16: the bf16 baseline's time over the row's (cuDNN dense; our bf16 kernel on the same
    layout sparse); vs_sage: SageAttention's (dense causal) over ours, dense rows only. Only
    between rows that passed."""
    ok = {
        (r["N"], r["method"], r["precision"], r["density_target"]): r["ms"]
        for r in rows
        if r["status"] == "ok"
    }
    for r in rows:
        dense = r["density_target"] is None
        if r["precision"] == "int8-fp8":  # SageAttention runs dense causal only: never sparse
            r["vs_sage"] = None if have_sage or not dense else "not installed"
        if r["status"] != "ok":
            continue
        base = ("sdpa-cudnn", "bf16") if dense else ("attnsieve", "bf16")
        base_ms = ok.get((r["N"], *base, r["density_target"]))
        r["vs_bf16"] = base_ms / r["ms"] if base_ms else None
        sage_ms = ok.get((r["N"], "sageattention", "int8-fp16", None))  # dense causal only
        if r["precision"] == "int8-fp8" and dense and sage_ms:
            r["vs_sage"] = sage_ms / r["ms"]


def _sageattn() -> Callable | None:
    """SageAttention's Triton release (1.0.6: INT8 Q·Kᵀ, FP16 P·V), if installed."""
    try:
        from sageattention import sageattn
    except ImportError:
        return None
    return sageattn
