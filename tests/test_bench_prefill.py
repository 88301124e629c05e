"""`attnsieve bench prefill`: what runs without a GPU (the JSON it writes)."""

import argparse
import json
import shlex

import pytest
import torch

from attnsieve.bench import prefill

CPU = torch.device("cpu")


def test_json_records_the_command_that_ran():
    """prefill.json's command reproduces the run: every option as parsed, not the bare name."""
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    argv = ["--lengths", "4096,8192", "--planners", "streaming", "--seed", "3", "--rep-ms", "10",
            "--kwargs", '{"streaming": {"window_tokens": 512}}', "--out", "my results"]  # fmt: skip
    args = parser.parse_args(argv)
    payload = prefill._payload(args, {}, ["sink_local"], [], CPU, complete=True)
    words = shlex.split(payload["command"])
    assert words[:3] == ["attnsieve", "bench", "prefill"]
    assert parser.parse_args(words[3:]) == args
    assert payload["settings"]["seed"] == 3 and payload["settings"]["rep_ms"] == 10


def test_recall_is_computed_by_the_reference_not_the_kernel_under_test(monkeypatch):
    """On CUDA, attention's automatic choice is the Triton kernel that prefill.json times: the
    sampled recall must come from the float32 reference instead (here the automatic choice is
    forced to Triton, and the Triton kernel refuses to run)."""
    import torch

    import attnsieve.api.prefill
    import attnsieve.kernels.prefill
    from attnsieve.kernels.prefill_reference import attention_reference
    from attnsieve.methods import get_planner

    def no_kernel(*args, **kwargs):
        raise AssertionError("the Triton kernel computed the recall")

    resolve = attnsieve.api.prefill.resolve_backend
    monkeypatch.setattr(
        attnsieve.api.prefill, "resolve_backend", lambda b, t, *a: resolve(b or "triton", t)
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


def test_l2_flush_note_covers_every_timed_field(monkeypatch):
    """prefill.json's l2_flush note names how L2 was flushed before every time a row holds:
    triton's do_bench (plan_ms, attn_ms, the dense baseline) and graph_ms (graph_plan_ms) flush
    differently. The timers are stubbed (CPU)."""
    from attnsieve.eval.workloads import make_workload
    from attnsieve.kernels.prefill_reference import attention_reference
    from attnsieve.methods import get_planner

    monkeypatch.setattr(prefill, "median_ms", lambda fn, rep_ms: 2.0)
    monkeypatch.setattr(prefill, "_graph_plan_ms", lambda planner, q, k: 1.0)
    monkeypatch.setattr(prefill, "sparse_attention", attention_reference)
    w = make_workload(["sink_local", "slash"], num_kv_heads=1, seq_len=256, head_dim=16)
    planner = get_planner("streaming", sink_tokens=16, window_tokens=64, block_q=32, block_k=32)
    args = argparse.Namespace(recall_blocks=2, rep_ms=1.0)
    row = prefill._bench(planner, w, args)
    assert row["check"] == "ok"
    timed = {key for key in row if key.endswith("_ms") and key != "total_ms"} | {"dense_ms"}
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    payload = prefill._payload(parser.parse_args([]), {}, [], [row], CPU, complete=True)
    note = payload["settings"]["l2_flush"]
    assert timed == {"plan_ms", "attn_ms", "graph_plan_ms", "dense_ms"}
    assert set(note) == timed
    assert "zero" in note["attn_ms"] and "read" in note["graph_plan_ms"]


def test_plot_names_the_baseline_that_ran(monkeypatch, tmp_path):
    """Where cuDNN has no kernel the dense baseline is SDPA flash (the rows record which ran): the
    plot's speed-up axes name the recorded backend, per length."""
    panels = []
    monkeypatch.setattr(prefill, "save_line_plots", lambda path, p, title: panels.extend(p))
    rows = [
        {"length": n, "planner": "streaming", "baseline": base, "speedup": 2.0, "recall": 0.9}
        for n, base in ((4096, "sdpa-flash"), (8192, "sdpa-cudnn"))
    ]
    prefill._plot(tmp_path / "p.png", rows, [4096, 8192])
    assert panels[0]["xlabel"].startswith("speed-up vs sdpa-flash dense")
    assert panels[1]["xlabel"].startswith("speed-up vs sdpa-cudnn dense")
    assert panels[2]["ylabel"] == "speed-up vs sdpa-flash / sdpa-cudnn dense"


def _stub_gpu(monkeypatch, bench):
    """main() on the CPU: the device, the dense baseline and a row's bench stubbed."""
    monkeypatch.setattr(prefill, "require_cuda", lambda: CPU)
    monkeypatch.setattr(prefill, "_dense_ms", lambda q, k, v, rep_ms: (4.0, "sdpa-cudnn"))
    monkeypatch.setattr(prefill, "_bench", bench)


def _row(planner, w, args):
    return {"density": 0.5, "recall": 1.0, "check": "ok", "plan_ms": 1.0, "attn_ms": 1.0,
            "total_ms": 2.0}  # fmt: skip


def test_a_failed_check_fails_the_command(monkeypatch, tmp_path):
    """The row's speed-up was withheld, but the command exited 0 (bench kernels, decode and e2e
    exit 1): a scripted session did not notice."""

    def bench(planner, w, args):
        if planner.name == "dense":
            return _row(planner, w, args)
        return {"density": 0.5, "recall": 1.0, "check": "FAILED: relative error 0.5 > 0.02"}

    _stub_gpu(monkeypatch, bench)
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    argv = ["--lengths", "128", "--planners", "streaming,dense", "--out", str(tmp_path)]
    assert prefill.main(parser.parse_args(argv)) == 1
    monkeypatch.setattr(prefill, "_bench", _row)
    assert prefill.main(parser.parse_args(argv)) == 0


@pytest.mark.parametrize("cut_after", [None, 0, 1])
def test_prefill_json_keeps_the_rows_a_run_finished(monkeypatch, tmp_path, cut_after):
    """prefill.json is written before the first row and after every row: a run cut short (here
    a row is interrupted, as a timeout would) leaves the rows it finished, marked incomplete, and
    no temporary file; a whole run marks it complete. An earlier run's files are never left
    beside it (its JSON said complete, its PNG showed other rows)."""
    finished = []

    def bench(planner, w, args):
        if len(finished) == cut_after:
            raise KeyboardInterrupt
        finished.append(planner)
        return _row(planner, w, args)

    (tmp_path / "prefill.json").write_text('{"complete": true, "rows": [{"planner": "old"}]}')
    (tmp_path / "prefill.png").write_bytes(b"an earlier run's plot")
    cut = cut_after is not None

    _stub_gpu(monkeypatch, bench)
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    args = parser.parse_args(
        ["--lengths", "128", "--planners", "streaming,dense", "--out", str(tmp_path)]
    )
    if cut:
        with pytest.raises(KeyboardInterrupt):
            prefill.main(args)
    else:
        assert prefill.main(args) == 0
    payload = json.loads((tmp_path / "prefill.json").read_text())
    assert payload["complete"] is not cut
    planners = [r["planner"] for r in payload["rows"]]
    assert planners == ["streaming", "dense"][: 2 if cut_after is None else cut_after]
    assert all(r["speedup"] == 2.0 for r in payload["rows"])
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "prefill.png").exists() is not cut


def test_head_kinds_are_recorded_as_the_rows_name_them(monkeypatch, tmp_path):
    """--kinds block (an alias of retrieval) was recorded as 'block' in settings.head_kinds while
    the workload, and each row's recall_by_kind, call those heads 'retrieval'."""
    workloads = []

    def bench(planner, w, args):
        workloads.append(w)
        return _row(planner, w, args)

    _stub_gpu(monkeypatch, bench)
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    argv = ["--lengths", "128", "--planners", "dense", "--kinds", "block,slash", "--heads", "4",
            "--kv-heads", "2", "--out", str(tmp_path)]  # fmt: skip
    assert prefill.main(parser.parse_args(argv)) == 0
    payload = json.loads((tmp_path / "prefill.json").read_text())
    assert payload["settings"]["head_kinds"] == list(workloads[0].head_kinds)
    assert payload["settings"]["head_kinds"] == ["retrieval", "slash"] * 2


def test_config_rows_take_layer_0_of_a_config_file(tmp_path):
    """--config benches layer 0's planner of each AttentionConfig file, per-head budgets included,
    and prefill.json records its method and fields and the command that reproduces it. Refused
    by name: a layer 0 without a planner, budgets for another head count, two files of one name."""
    import json

    import pytest

    from attnsieve.methods.prefill.vertical_slash import VerticalSlashPlanner

    def write(name, entry, layers=("0",)):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            json.dumps({"prefill": "dense", "layers": {i: {"prefill": entry} for i in layers}})
        )
        return str(path)

    entry = {"method": "vertical_slash", "vertical_size": [30, 100], "slash_size": [100, 500]}
    cal, other = write("cal.json", entry, ("0", "5")), write("b.json", ["dense", "streaming"])
    planners = prefill._config_planners([cal, other], heads=2, kv_heads=1)
    assert list(planners) == ["config:cal", "config:b"]
    assert isinstance(planners["config:cal"], VerticalSlashPlanner)
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    args = parser.parse_args(["--config", f"{cal},{other}"])
    payload = prefill._payload(args, planners, ["sink_local"], [], CPU, complete=True)
    assert parser.parse_args(shlex.split(payload["command"])[3:]) == args
    kwargs = payload["settings"]["kwargs"]
    assert kwargs["config:cal"]["method"] == "vertical_slash"
    assert kwargs["config:cal"]["slash_size"] == (100, 500)
    assert [p["method"] for p in kwargs["config:b"]["planners"]] == ["dense", "streaming"]
    assert payload["settings"]["configs"] == [cal, other]
    with pytest.raises(ValueError, match="--config: .* no prefill planner"):
        prefill._config_planners([write("none.json", None)], heads=2, kv_heads=1)
    with pytest.raises(
        ValueError,
        match=r"^--config: .*cal.json: .*vertical_size: 2 per-head budgets, but the model plans 4 "
        r".*\(--heads 4, --kv-heads 1\)$",
    ):
        prefill._config_planners([cal], heads=4, kv_heads=1)
    with pytest.raises(ValueError, match="two files named 'cal'"):
        prefill._config_planners([cal, write("sub/cal.json", entry)], heads=2, kv_heads=1)
    with pytest.raises(ValueError, match=f"^--config: {cal} given twice"):
        prefill._config_planners([cal, cal], heads=2, kv_heads=1)
    int8 = tmp_path / "int8.json"  # timed in bf16 all the same, silently
    int8.write_text(json.dumps({"prefill": "flexprefill", "precision": "int8-fp8"}))
    with pytest.raises(ValueError, match="^--config: .*int8.json sets precision 'int8-fp8'"):
        prefill._config_planners([str(int8)], heads=2, kv_heads=1)


def test_bad_kwargs_are_named_before_the_gpu_is_asked_for(monkeypatch):
    """--kwargs that is not an object of objects, or overrides a planner not benchmarked, is a
    named error (it was a traceback, or silently dropped), raised before require_cuda."""

    monkeypatch.setattr(prefill, "require_cuda", lambda: pytest.fail("checked after the GPU"))
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    for text in (
        "[]",
        '"x"',
        "{bad",
        '{"streaming": 5}',
        '{"nosuch": {}}',
        '{"streaming": {"method": "dense"}}',
    ):
        args = parser.parse_args(["--planners", "streaming", "--kwargs", text])
        with pytest.raises(ValueError, match="^--kwargs: "):
            prefill.main(args)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--planners", "nope"], "^--planners: unknown planner 'nope'"),
        (["--planners", "dense,dense"], r"^--planners: \['dense'\] given twice"),
        (["--kinds", "nope"], "^--kinds: unknown kind .nope."),
        (["--kwargs", '{"streaming": {"nope": 1}}'], "^--kwargs: streaming: .*nope"),
        (["--planners", "dense", "--kwargs", '{"dense": {"x": 1}}'], "^--kwargs: dense: .*'x'"),
        (["--config", "/nonexistent/cal.json"], "^--config: /nonexistent/cal.json"),
        # the synthetic heads need 68 tokens; a shorter one failed after every longer one ran
        (["--lengths", "131072,64"], r"^--lengths: expected at least 68 tokens .*got \[64\]"),
    ],
)
def test_planners_kinds_and_configs_are_named_before_the_gpu_is_asked_for(monkeypatch, argv, match):
    """They were hidden behind 'needs a CUDA GPU' on a machine without one (or named the planner's
    class and not the option)."""
    monkeypatch.setattr(prefill, "require_cuda", lambda: pytest.fail("checked after the GPU"))
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    with pytest.raises(ValueError, match=match):
        prefill.main(parser.parse_args(argv))


def test_planners_are_split_as_eval_splits_them():
    """'dense, streaming' failed on ' streaming'; 'dense,dense' gave one row, silently."""
    assert list(prefill._planners("dense, streaming", "{}")) == ["dense", "streaming"]
    with pytest.raises(ValueError, match=r"^--planners: \['dense'\] given twice"):
        prefill._planners("dense,streaming,dense", "{}")
