"""`attnsieve bench kernels`: what runs without a GPU (speed-up bookkeeping)."""

import pytest

from attnsieve.bench.kernels import _add_precision_speedups


def _row(method, precision, ms, target=None, n=4096):
    return {"N": n, "method": method, "precision": precision, "ms": ms, "status": "ok",
            "density": 1.0 if target is None else target, "density_target": target}  # fmt: skip


def test_vs_sage_compares_dense_rows_only():
    """SageAttention runs dense causal attention only: a sparse INT8·FP8 row at a length also
    benchmarked dense must not be credited with a speed-up over dense SageAttention."""
    rows = [
        _row("sdpa-cudnn", "bf16", 10.0),
        _row("attnsieve", "int8-fp8", 5.0),
        _row("sageattention", "int8-fp16", 6.0),
        _row("attnsieve", "bf16", 2.0, target=0.1),
        _row("attnsieve", "int8-fp8", 1.0, target=0.1),
    ]
    _add_precision_speedups(rows, have_sage=True)
    dense, sparse = rows[1], rows[4]
    assert dense["vs_sage"] == pytest.approx(6.0 / 5.0)
    assert dense["vs_bf16"] == pytest.approx(10.0 / 5.0)
    assert sparse["vs_sage"] is None
    assert sparse["vs_bf16"] == pytest.approx(2.0 / 1.0)
