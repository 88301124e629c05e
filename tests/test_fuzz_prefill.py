"""benchmarks/fuzz_prefill.py under Triton's interpreter: 12 small fp16 cases against the float32
reference, and proof that its comparison catches a wrong kernel (the GPU run does 2000+:
`benchmarks/h200_session.sh fuzz`). On a GPU the script draws another palette (bf16 too) and
dense layouts go to cuDNN, so the runs below are the interpreter's only."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from attnsieve.kernels import INTERPRET, prefill
from attnsieve.kernels.prefill_reference import attention_reference

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_prefill.py"
spec = importlib.util.spec_from_file_location("fuzz_prefill", PATH)
fuzz = sys.modules["fuzz_prefill"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(fuzz)
INTERPRETER_RUN = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 on CPU")


@INTERPRETER_RUN
def test_small_cases_match_the_reference(tmp_path):
    # Seeds 0-11 already hold both entry points, every head dim, causal or not, random and dense
    # layouts with columns and spans, N > M, N = 1, lengths beside 128, broadcast batch and heads,
    # lse, strided K/V and an out buffer; each further case costs the interpreter ~2 s.
    assert fuzz.main(["--cases", "12", "--max-len", "160", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "fuzz_prefill.json").read_text())
    assert summary["cases"] == 12 and summary["mismatches"] == []
    assert summary["max_errors"]["err float16"] <= fuzz.OUT_TOL["float16"]
    assert (tmp_path / "fuzz_prefill.log").read_text().count("\n") >= 2


@INTERPRETER_RUN
def test_worker_processes_give_the_same_verdict(tmp_path, monkeypatch):
    """Cases split over two spawned processes: every case reported once, none lost."""
    # the workers unpickle fuzz_prefill.run_chunk by module name (spawn copies sys.path)
    monkeypatch.syspath_prepend(str(PATH.parent))
    argv = ["--cases", "6", "--max-len", "48", "--seed", "3", "--workers", "2"]
    assert fuzz.main([*argv, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "fuzz_prefill.json").read_text())
    assert summary["workers"] == 2 and summary["mismatches"] == []
    assert sum(summary["cases_by_dtype_and_entry"].values()) == 6


def test_generator_covers_the_space():
    """Over many draws: every entry point, both layouts kinds, N > M and N < M, GQA up to 8,
    columns, broadcasting, lse, strided K/V and out buffers, lengths 1 and off block multiples."""
    combos = fuzz.palette(0, 12, ("float16", "bfloat16"))
    assert {c[0] for c in combos} == {"float16", "bfloat16"}
    assert {c[1] for c in combos} == set(fuzz.HEAD_DIMS)
    cases = [fuzz.draw(seed, combos, 2000) for seed in range(2000)]
    assert {c.entry for c in cases} == {"attention", "kernel"}
    assert {c.layout for c in cases} == {"random", "dense", "empty"}
    assert any(c.n > c.m for c in cases) and any(c.n < c.m for c in cases)
    assert {c.group for c in cases} == set(range(1, 9)) and {c.batch for c in cases} == {1, 2, 3}
    assert all(1 <= c.n <= 2000 and 1 <= c.m <= 2000 for c in cases)
    assert min(c.n for c in cases) == 1 and max(c.m for c in cases) > 1000
    assert any(c.n % c.block_q for c in cases) and any(c.m % c.block_k == 1 for c in cases)
    assert sum(c.n <= 256 and c.m <= 256 for c in cases) > len(cases) / 2  # mostly small
    for flag in ("causal", "return_lse", "strided_kv", "out_buffer"):
        assert {getattr(c, flag) for c in cases} == {True, False}, flag
    assert {c.columns > 0 for c in cases} == {True, False}
    assert any(c.layout_heads == 1 < c.kv_heads * c.group for c in cases)
    assert any(c.layout_batch == 1 < c.batch for c in cases)


def _wrong(kind):
    """A stand-in for the Triton kernel: the float32 reference, broken in one way."""

    def kernel(q, k, v, layout, *, causal=True, scale=None, return_lse=False, out=None, **_):
        o, lse = attention_reference(q, k, v, layout, causal=causal, scale=scale, return_lse=True)
        if kind == "scale":
            o = o * 1.01
        elif kind == "lse":
            lse = lse + 0.05
        elif kind == "empty":
            o = torch.where(torch.isinf(lse)[..., None], 1e-3, o).to(o.dtype)
            lse = torch.where(torch.isinf(lse), 0.0, lse)
        o = o if out is None else out.copy_(o)
        return (o, lse) if return_lse else o

    return kernel


@INTERPRETER_RUN
@pytest.mark.parametrize(("kind", "seeds"), [("scale", 6), ("lse", 12), ("empty", 40)])
def test_a_wrong_kernel_is_caught(tmp_path, monkeypatch, kind, seeds):
    monkeypatch.setattr(prefill, "sparse_attention", _wrong(kind))
    argv = ["--cases", str(seeds), "--max-len", "64", "--out", str(tmp_path)]
    assert fuzz.main(argv) == 1
    summary = json.loads((tmp_path / "fuzz_prefill.json").read_text())
    assert summary["mismatches"], kind
    first = summary["mismatches"][0]
    assert {"seed", "shape", "problems", "case"} <= set(first)
    # one case again, by its seed: the same finding
    again = tmp_path / "again"
    assert fuzz.main(["--only", str(first["seed"]), "--max-len", "64", "--out", str(again)]) == 1
    assert (
        json.loads((again / "fuzz_prefill.json").read_text())["mismatches"][0]["problems"]
        == (first["problems"])
    )


@INTERPRETER_RUN
def test_nan_output_is_a_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(prefill, "sparse_attention", lambda q, *a, **kw: _nan(q, kw))
    assert fuzz.main(["--cases", "3", "--max-len", "32", "--out", str(tmp_path)]) == 1


def _nan(q, kw):
    o = torch.full_like(q, math.nan)
    return (o, torch.zeros(q.shape[:3])) if kw.get("return_lse") else o
