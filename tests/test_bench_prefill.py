"""`attnsieve bench prefill`: what runs without a GPU (the JSON it writes)."""

import argparse
import shlex

from attnsieve.bench import prefill


def test_json_records_the_command_that_ran():
    """prefill.json's command reproduces the run: every option as parsed, not the bare name."""
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    argv = ["--lengths", "4096,8192", "--planners", "streaming", "--seed", "3", "--rep-ms", "10",
            "--kwargs", '{"streaming": {"window_tokens": 512}}', "--out", "my results"]  # fmt: skip
    args = parser.parse_args(argv)
    payload = prefill._payload(args, {}, ["sink_local"], [])
    words = shlex.split(payload["command"])
    assert words[:3] == ["attnsieve", "bench", "prefill"]
    assert parser.parse_args(words[3:]) == args
    assert payload["settings"]["seed"] == 3 and payload["settings"]["rep_ms"] == 10


def test_recall_is_computed_by_the_reference_not_the_kernel_under_test(monkeypatch):
    """On CUDA, attention's automatic choice is the Triton kernel that prefill.json times: the
    sampled recall must come from the float32 reference instead (here the automatic choice is
    forced to Triton, and the Triton kernel refuses to run)."""
    import torch

    import attnsieve.api
    import attnsieve.kernels.prefill
    from attnsieve.kernels.prefill_reference import attention_reference
    from attnsieve.methods import get_planner

    def no_kernel(*args, **kwargs):
        raise AssertionError("the Triton kernel computed the recall")

    resolve = attnsieve.api.resolve_backend
    monkeypatch.setattr(
        attnsieve.api, "resolve_backend", lambda b, t, *a: resolve(b or "triton", t)
    )
    monkeypatch.setattr(attnsieve.kernels.prefill, "sparse_attention", no_kernel)
    q, k, v = (torch.randn(1, h, 256, 16) for h in (4, 2, 2))
    layout = get_planner(
        "streaming", sink_tokens=16, window_tokens=64, block_q=32, block_k=32
    ).plan(q, k)
    out = attention_reference(q, k, v, layout)
    recall, err = prefill._sampled_recall_and_error(q, k, v, layout, out, 3)
    assert recall.shape == (4,) and bool(((recall > 0) & (recall <= 1)).all())
    assert err < 1e-5
