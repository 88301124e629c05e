"""`attnsieve bench kernels`: what runs without a GPU (speed-up bookkeeping)."""

import pytest

from attnsieve.bench.kernels_precision import _add_precision_speedups
from attnsieve.kernels import INTERPRET

# the INT8·FP8 rows run on the CPU here; a GPU machine runs `bench kernels` itself
NEEDS_INTERPRETER = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 on CPU")


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


def test_vs_sage_of_a_sparse_row_is_none_without_sageattention():
    """Without SageAttention the sparse INT8·FP8 row read vs_sage "not installed", as if
    installing it would give that row a comparison; it never has one."""
    rows = [_row("attnsieve", "int8-fp8", 5.0), _row("attnsieve", "int8-fp8", 1.0, target=0.1)]
    _add_precision_speedups(rows, have_sage=False)
    assert rows[0]["vs_sage"] == "not installed"
    assert rows[1]["vs_sage"] is None


class _Bar:
    def update(self, *args):
        pass


def _cpu_bench_length(monkeypatch, kernel):
    """`_bench_length` on the CPU: CUDA memory statistics and timing stubbed, the Triton kernel
    replaced by ``kernel``, SDPA's flash / cuDNN by its CPU kernel."""
    import argparse

    import torch

    import attnsieve.kernels.prefill
    from attnsieve.bench import kernels

    for name, value in (("reset_peak_memory_stats", None), ("memory_allocated", 0),
                        ("max_memory_allocated", 0), ("synchronize", None)):  # fmt: skip
        monkeypatch.setattr(torch.cuda, name, lambda value=value: value)
    from attnsieve.bench import common

    monkeypatch.setattr(common, "median_ms", lambda fn, rep_ms: fn() is not None and 1.0)
    monkeypatch.setattr(attnsieve.kernels.prefill, "sparse_attention", kernel)

    def sdpa(q, k, v, backend):
        return lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=True
        )

    monkeypatch.setattr(kernels, "sdpa_call", sdpa)
    args = argparse.Namespace(dtype="bf16", batch=1, heads=4, kv_heads=2, head_dim=16, block=16,
                              densities=[0.3], rep_ms=1.0, seed=0, copies=2)  # fmt: skip
    return kernels._bench_length(200, args, None, _Bar(), torch.device("cpu"))


def test_no_flex_still_checks_sparse_rows(monkeypatch):
    """--no-flex: the sparse rows' reference is not FlexAttention's output (which is not run) but
    the float32 reference on sampled query blocks, so a right kernel passes and a wrong one fails
    (before, every sparse row was 'correctness failed (no reference)')."""
    from attnsieve.kernels.prefill_reference import attention_reference

    def right(q, k, v, layout, dense_dispatch=True):
        return attention_reference(q, k, v, layout)

    rows = _cpu_bench_length(monkeypatch, right)
    sparse = [r for r in rows if r["density_target"] is not None]
    assert [r["method"] for r in sparse] == ["attnsieve"]
    assert sparse[0]["status"] == "ok" and sparse[0]["rel_err"] < 1e-2
    assert sparse[0]["copies_ms"] == [1.0, 1.0]
    assert all(r["status"] == "ok" for r in rows if r["method"].startswith("attnsieve"))

    def dense_instead(q, k, v, layout, dense_dispatch=True):  # ignores the layout
        return attention_reference(q, k, v)

    rows = _cpu_bench_length(monkeypatch, dense_instead)
    sparse = [r for r in rows if r["density_target"] is not None]
    assert sparse[0]["status"] == "correctness failed" and "ms" not in sparse[0]


def test_sampled_reference_matches_the_full_reference():
    """The sampled rows of the reference equal the full reference's rows (the cropped problem of
    each block keeps its causal alignment and its blocks)."""
    import torch

    from attnsieve.bench.baselines import random_causal_layout, sampled_reference
    from attnsieve.kernels.prefill_reference import attention_reference

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 200, 16) for h in (4, 2, 2))
    layout = random_causal_layout(200, 4, 16, 0.3, torch.device("cpu"), gen)
    ref = sampled_reference(q, k, v, layout, blocks=7)  # of 13: blocks 0, 2, ..., 12
    full = attention_reference(q, k, v, layout)
    assert ref.rows.numel() == 6 * 16 + 8 and int(ref.rows[-1]) == 199  # a partial last block
    torch.testing.assert_close(ref.out, full[:, :, ref.rows], rtol=1e-5, atol=1e-5)


def _cpu_precision_rows(monkeypatch):
    """`bench_precision` on the CPU with tiny shapes, timing and CUDA synchronisation stubbed."""
    import argparse

    import torch

    from attnsieve.bench import common, kernels_precision

    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(kernels_precision, "median_ms", lambda fn, rep_ms: 1.0)  # quant_ms
    monkeypatch.setattr(common, "median_ms", lambda fn, rep_ms: fn() is not None and 1.0)
    args = argparse.Namespace(batch=1, heads=2, kv_heads=1, head_dim=32, block=32, seed=0,
                              rep_ms=1.0, quant_lengths=[64], quant_sparse_lengths=[96],
                              quant_density=0.5, copies=2)  # fmt: skip
    rows = kernels_precision.bench_precision(args, _Bar(), torch.device("cpu"))
    assert [(r["N"], r["method"], r["precision"]) for r in rows] == [
        (64, "sdpa-cudnn", "bf16"), (64, "attnsieve-triton", "bf16"),
        (64, "attnsieve", "int8-fp8"), (64, "sageattention", "int8-fp16"),
        (96, "attnsieve", "bf16"), (96, "attnsieve", "int8-fp8"),
    ]  # fmt: skip
    return {(r["N"], r["method"], r["precision"]): r for r in rows}


@NEEDS_INTERPRETER
def test_precision_rows_check_before_they_time(monkeypatch):
    """The INT8·FP8 rows (run by the interpreter here) pass their cosine check against the bf16
    reference (SDPA dense, CPU flash; the float32 reference on sampled rows sparse) and are timed
    with their quantisation; a backend that cannot run is an error row, untimed."""
    from attnsieve.bench.kernels_precision import MIN_COSINE

    rows = _cpu_precision_rows(monkeypatch)
    for key in ((64, "attnsieve", "int8-fp8"), (96, "attnsieve", "int8-fp8")):
        assert rows[key]["status"] == "ok" and rows[key]["cosine"] >= MIN_COSINE
        assert rows[key]["ms"] == 1.0 and rows[key]["quant_ms"] == 1.0
        assert rows[key]["copies_ms"] == [1.0, 1.0]
    assert rows[64, "attnsieve", "int8-fp8"]["vs_sage"] in (None, "not installed")
    cudnn = rows[64, "sdpa-cudnn", "bf16"]  # no cuDNN on the CPU
    assert cudnn["status"].startswith("error") and "ms" not in cudnn


def test_precision_rows_refuse_to_time_a_wrong_kernel(monkeypatch):
    """An INT8·FP8 kernel that returns zeros fails the dense and the sparse check: neither row is
    timed nor credited with a speed-up."""
    import torch

    import attnsieve.kernels.quant

    def wrong(q, k, v, layout=None):
        return torch.zeros_like(q)

    monkeypatch.setattr(attnsieve.kernels.quant, "quant_attention", wrong)
    rows = _cpu_precision_rows(monkeypatch)
    for key in ((64, "attnsieve", "int8-fp8"), (96, "attnsieve", "int8-fp8")):
        assert rows[key]["status"] == "correctness failed"
        assert "ms" not in rows[key] and "vs_bf16" not in rows[key]


def test_an_empty_precision_list_is_refused():
    import argparse

    import pytest

    from attnsieve.bench import kernels

    with pytest.raises(argparse.ArgumentTypeError, match="expected a comma list"):
        kernels._precisions(",")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--quant-lengths", "4096"], "--quant-lengths: an option of the int8-fp8 rows, but "
         "--precision is bf16"),
        (["--quant-density", "0.2"], "--quant-density: an option of the int8-fp8 rows"),
        (["--precision", "int8-fp8", "--lengths", "4096"], "--lengths: an option of the bf16 "
         "rows, but --precision is int8-fp8"),
        (["--precision", "int8-fp8", "--no-flex"], "--no-flex: an option of the bf16 rows"),
        (["--precision", "int8-fp8", "--dtype", "fp16"], "--dtype: an option of the bf16 rows"),
    ],
)  # fmt: skip
def test_an_option_of_a_precision_left_out_is_refused(capsys, argv, message):
    """They were silently ignored; the refusal comes before the GPU is asked for."""
    from attnsieve import cli

    assert cli.main(["bench", "kernels", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_each_precision_takes_its_defaults():
    import argparse

    from attnsieve.bench import kernels

    parser = argparse.ArgumentParser()
    kernels.add_arguments(parser)
    args = parser.parse_args(["--precision", "bf16,int8-fp8", "--quant-density", "0.2"])
    kernels.check_mode_options(args)
    assert args.lengths == [4096, 16384, 65536, 131072] and args.dtype == "bf16"
    assert args.quant_density == 0.2 and args.quant_lengths == [32768, 131072]
    assert args.no_flex is False


def test_flex_compiles_every_length_or_fails():
    """Each length compiles FlexAttention twice; past torch's limit of 8 versions a fifth length
    ran Flex unfused (correct, so checked and timed) and inflated vs_flex."""
    import torch

    from attnsieve.bench import kernels

    limit = torch._dynamo.config.recompile_limit
    with kernels.flex_compile_budget(6):
        assert torch._dynamo.config.recompile_limit >= 12
        assert torch._dynamo.config.fail_on_recompile_limit_hit is True
    assert torch._dynamo.config.recompile_limit == limit
    assert torch._dynamo.config.fail_on_recompile_limit_hit is False


@pytest.mark.parametrize("precision", ["bf16", "int8-fp8", "bf16,int8-fp8"])
def test_the_recorded_command_runs_again(precision):
    """kernels.json recorded every mode's defaults, so `--precision bf16`'s command named
    --quant-lengths, which the same command then refused."""
    import argparse
    import shlex

    from attnsieve.bench import kernels
    from attnsieve.bench.common import command_line

    def parsed(argv):
        parser = argparse.ArgumentParser()
        kernels.add_arguments(parser)
        args = parser.parse_args(argv)
        kernels.check_mode_options(args)
        return args

    first = parsed(["--precision", precision])
    again = parsed(shlex.split(command_line("bench kernels", first))[3:])
    assert vars(again) == vars(first)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--head-dim", "1000"], "argument --head-dim: expected a power of two in [16, 256], "
         "got '1000'"),
        (["--precision", "int8-fp8", "--head-dim", "16"], "--head-dim: the int8-fp8 rows take a "
         "power of two in [32, 256], got 16"),
        (["--precision", "bf16,int8-fp8", "--block", "16"], "--block: the int8-fp8 rows take a "
         "power of two in [32, 128], got 16"),
    ],
)  # fmt: skip
def test_a_shape_the_kernels_do_not_take_is_refused(capsys, monkeypatch, argv, message):
    """Each row's kernel call failed, after the GPU work, as an error row."""
    from attnsieve import cli
    from attnsieve.bench import kernels

    monkeypatch.setattr(kernels, "require_cuda", lambda: pytest.fail("checked after the GPU"))
    assert cli.main(["bench", "kernels", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"attnsieve bench kernels: error: {message}"


def test_no_row_to_plot_writes_no_png(tmp_path):
    """Every low-precision dense row failed: the plot raised "Number of columns must be a positive
    integer" after the whole run, and the table was never printed."""
    from attnsieve.bench.kernels import _plot

    rows = [{"status": "failed", "N": 4096, "method": "attnsieve-triton", "density_target": None,
             "precision": "int8-fp8"}]  # fmt: skip
    assert _plot([], rows, tmp_path / "kernels.png", "cpu") is None
    assert not (tmp_path / "kernels.png").exists()


def test_plot_shows_each_low_precision_speedup_over_its_bf16_baseline(monkeypatch, tmp_path):
    """The PNG had TFLOP/s by precision for dense rows only: the sparse INT8·FP8 row's speed-up
    over the bf16 kernel on its layout (issue 12's sparse target) was in the table alone."""
    from attnsieve.bench import kernels

    panels = []
    monkeypatch.setattr(kernels, "save_line_plots", lambda path, p, title: panels.extend(p))

    def row(n, method, precision, target, vs_bf16, status="ok"):
        return {"N": n, "method": method, "precision": precision, "density_target": target,
                "status": status, "tflops": 1.0, "vs_bf16": vs_bf16}  # fmt: skip

    rows = [
        row(4096, "sdpa-cudnn", "bf16", None, 1.0),
        row(4096, "attnsieve", "int8-fp8", None, 1.2),
        row(8192, "attnsieve", "int8-fp8", None, 1.3),
        row(4096, "sageattention", "int8-fp16", None, 0.8, status="correctness failed"),
        row(8192, "attnsieve", "bf16", 0.1, 1.0),
        row(8192, "attnsieve", "int8-fp8", 0.1, 1.15),
    ]
    kernels._plot([], rows, tmp_path / "kernels.png", "cpu")
    (speedups,) = [p for p in panels if p["ylabel"].startswith("speed-up over bf16")]
    assert speedups["series"] == {
        "attnsieve int8-fp8 dense, vs cuDNN bf16": ([4096, 8192], [1.2, 1.3]),
        "attnsieve int8-fp8 block-sparse at density 0.1, vs its bf16 kernel": ([8192], [1.15]),
    }
    assert speedups["hlines"] == {"bf16": 1.0}


def test_no_row_to_plot_leaves_no_earlier_png(tmp_path):
    """With no row to plot, kernels.json said "(no row ran to plot)" while an earlier run's
    kernels.png stayed beside it, showing other rows."""
    from attnsieve.bench.kernels import _plot

    path = tmp_path / "kernels.png"
    path.write_bytes(b"an earlier run's plot")
    rows = [{"status": "failed", "N": 4096, "method": "attnsieve", "density_target": None,
             "precision": "int8-fp8"}]  # fmt: skip
    assert _plot([], rows, path, "cpu") is None
    assert not path.exists()


def test_a_kernel_of_ours_that_raises_fails_the_command(monkeypatch):
    """Every row of attnsieve's kernel was an error row (a Triton failure, memory) and the command
    exited 0, as for a backend this GPU or torch lacks, which still does not fail it."""
    from attnsieve.bench import kernels
    from attnsieve.kernels.prefill_reference import attention_reference

    def right(q, k, v, layout, dense_dispatch=True):
        return attention_reference(q, k, v, layout)

    def raises(q, k, v, layout, dense_dispatch=True):
        raise RuntimeError("triton: out of resources")

    rows = _cpu_bench_length(monkeypatch, right)
    missing = {"method": "sdpa-cudnn", "status": "error: RuntimeError: no kernel"}
    assert kernels.exit_status([*rows, missing]) == 0
    rows = _cpu_bench_length(monkeypatch, raises)
    ours = [r for r in rows if r["method"].startswith("attnsieve")]
    assert len(ours) == 3 and all(r["status"].startswith("error") for r in ours)
    assert kernels.exit_status(rows) == 1
