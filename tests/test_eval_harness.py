"""`attnsieve eval` end to end on a tiny random probe-architecture model (CPU)."""

import argparse
import csv
import json
import re
import shutil

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

import attnsieve.eval.probe as probe  # noqa: E402
from attnsieve import cli  # noqa: E402
from attnsieve.eval import harness, model_fidelity, plots, sweep_args  # noqa: E402
from attnsieve.eval.probe.tokenizer import ByteTokenizer  # noqa: E402
from attnsieve.eval.tasks import answer_budget, make_samples  # noqa: E402


def eval_cli(args: argparse.Namespace) -> int:
    """`harness.main` as `attnsieve eval` runs it: a user error it raises is one line on stderr
    and exit 2 (the CLI's, which ATTNSIEVE_DEBUG=1 turns into the traceback)."""
    try:
        return harness.main(args)
    except cli.USER_ERRORS as e:
        return cli._fail("attnsieve eval", e)


PNG = b"\x89PNG\r\n\x1a\n"
STREAMING = {"streaming": {"sink_tokens": 4, "window_tokens": 64, "block_q": 64, "block_k": 64}}


def _args(model_dir, out, *extra, methods="dense,streaming"):
    """eval's arguments for the probe; streaming's --method-kwargs where it is among ``methods``
    (they are refused for a planner that is not); two tasks of two samples, none with --fidelity
    (one prompt of its default task)."""
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    kwargs = ["--method-kwargs", json.dumps(STREAMING)] if "streaming" in methods.split(",") else []
    grid = [] if "--fidelity" in extra else ["--tasks", "niah_single,passkey", "--samples", "2"]
    return parser.parse_args(
        ["--model", str(model_dir), "--methods", methods, "--lengths", "512", *grid,
         "--out", str(out), "--device", "cpu", *kwargs, *extra]
    )  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lengths", "24,512"], "length=24 is too short for task 'niah_single'"),
        # sample 0 fits in 380 tokens, a later one of the ten does not
        (["--lengths", "380", "--tasks", "niah_single", "--samples", "10"],
         "length=380 is too short for task 'niah_single'"),
        (["--fidelity", "--fidelity-length", "20"],
         "--fidelity-length: 20 tokens cannot hold the prompt: length=20 is too short"),
    ],
)  # fmt: skip
def test_a_length_too_short_for_a_task_is_refused_before_the_weights_load(
    tiny_probe_dir, tmp_path, monkeypatch, capsys, extra, message
):
    """It was found while the cells ran (or the --fidelity prompt was built): the weights' and
    the samples' progress bars came before the one error line, and an empty out folder after."""

    def load_model(*a, **k):
        raise AssertionError("the weights loaded before the lengths were checked")

    monkeypatch.setattr(harness, "load_model", load_model)
    args = _args(tiny_probe_dir, tmp_path / "out", *extra)
    if "--fidelity" in extra:
        args.lengths = None
    assert eval_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"attnsieve eval: error: {message}"), err
    assert not (tmp_path / "out").exists()


def test_sample_zero_fits_where_the_length_check_refuses():
    """The premise of the 380-token case above: only a later sample is too long."""
    from attnsieve.eval.probe.tokenizer import ByteTokenizer

    make_samples("niah_single", ByteTokenizer(), 380, 1, 0)
    with pytest.raises(ValueError, match="length=380 is too short"):
        make_samples("niah_single", ByteTokenizer(), 380, 10, 0)


def test_parse_length():
    assert sweep_args.parse_length("4k") == 4096
    assert sweep_args.parse_length(" 128K ") == 131072
    assert sweep_args.parse_length("1000") == 1000
    for bad in ("0", "4m", "k", "-1", "²", "4²k"):  # isdigit() takes "²", int() does not
        with pytest.raises(ValueError, match="lengths"):
            sweep_args.parse_length(bad)


def test_eval_end_to_end_and_resume(tiny_probe_dir, tmp_path, monkeypatch, capsys):
    calls = []
    generate = harness.generate

    def counting(*args, **kwargs):
        calls.append((len(args[2].encode()), args[3]))  # (prompt: bytes are tokens, new tokens)
        return generate(*args, **kwargs)

    monkeypatch.setattr(harness, "generate", counting)
    assert harness.main(_args(tiny_probe_dir, tmp_path)) == 0
    assert len(calls) == 4 * 2  # 4 cells x 2 samples: no warm-up on the CPU
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is True
    assert results["environment"]["device"] == "cpu"  # the run's, also beside a GPU
    assert results["environment"]["torch"] == torch.__version__
    cells = {(c["method"], c["task"]): c for c in results["cells"]}
    assert len(cells) == 4
    for (method, _), cell in cells.items():
        assert 0.0 <= cell["accuracy"] <= 1.0 and len(cell["scores"]) == 2
        assert cell["prefill_seconds"] > 0 and cell["peak_memory_mib"] > 0
        assert cell["mean_prompt_tokens"] <= 512
        assert len(cell["density_per_layer"]) == 2
        if method == "dense":
            assert cell["density"] == pytest.approx(1.0)
        else:
            assert cell["density"] < 0.9  # sinks + a 64-token window over 512 tokens
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and set(rows[0]) == set(harness.CSV_COLUMNS)
    for name in ("accuracy_vs_length.png", "frontier.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    lines = (tmp_path / "cells.jsonl").read_text().splitlines()
    printed = [line for line in capsys.readouterr().out.splitlines() if ": acc " in line]
    assert len(printed) == 4
    for line in printed:  # every non-dense cell is paired with dense's samples
        assert ("vs dense" in line) == (line.split()[0] != "dense"), line

    calls.clear()  # the same command again: every cell is done, nothing runs
    assert harness.main(_args(tiny_probe_dir, tmp_path)) == 0
    assert calls == []
    assert (tmp_path / "cells.jsonl").read_text().splitlines() == lines

    # a new task: only its two cells run; the old ones are reused as they were
    args = _args(tiny_probe_dir, tmp_path)
    args.tasks = "niah_single,passkey,variable_tracking"
    assert harness.main(args) == 0
    assert len(calls) == 2 * 2
    # the answer fits in the length (variable_tracking's prompt of 512 tokens would leave no room)
    assert all(prompt + new <= 512 for prompt, new in calls)
    assert (tmp_path / "cells.jsonl").read_text().splitlines()[:4] == lines
    assert len(json.loads((tmp_path / "results.json").read_text())["cells"]) == 6


def test_a_run_cut_short_leaves_results_of_its_finished_cells(
    tiny_probe_dir, tmp_path, monkeypatch
):
    run_cell, calls = harness.run_cell, []

    def cut_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # as a timeout's signal would end it
        calls.append(1)
        return run_cell(*args, **kwargs)

    monkeypatch.setattr(harness, "run_cell", cut_after_one)
    with pytest.raises(KeyboardInterrupt):
        harness.main(_args(tiny_probe_dir, tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is False and len(results["cells"]) == 1
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_a_resumed_run_cut_short_in_its_first_cell_is_not_left_complete(
    tiny_probe_dir, tmp_path, monkeypatch
):
    """A finished run, then a larger one cut short before its first new cell ends: results.json
    said the first run's "complete": true, its grid and cells, as if nothing were missing."""
    calls, args = _counted_passkey_run(tiny_probe_dir, tmp_path, monkeypatch)
    assert harness.main(args) == 0 and len(calls) == 1

    def cut(*args, **kwargs):
        raise KeyboardInterrupt  # as a timeout's signal would end it

    monkeypatch.setattr(harness, "run_cell", cut)
    args.tasks = "passkey,niah_single"
    with pytest.raises(KeyboardInterrupt):
        harness.main(args)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is False and results["tasks"] == ["passkey", "niah_single"]
    assert [c["task"] for c in results["cells"]] == ["passkey"]


def test_as_patched_follows_the_prior_that_keeps_a_layer_from_planning():
    """On SmolLM2's heads at 16K flexprefill pays below density 0.207, under the prior 0.3 that a
    patched layer is judged by before its first plan: it never plans, so a plan of density 0.15
    runs dense as patched (it read as planned). At 32K both pay; a plan of 0.9 does not."""
    from types import SimpleNamespace

    from attnsieve.methods import get_planner

    planner = get_planner("flexprefill")

    def runs_dense(n, density):
        q = SimpleNamespace(is_cuda=True, shape=(1, 9, n, 64))
        k = SimpleNamespace(is_cuda=True, shape=(1, 3, n, 64))
        return model_fidelity.cost_model_runs_dense(planner, q, k, density)

    assert runs_dense(16384, 0.15)
    assert not runs_dense(32768, 0.15)
    assert runs_dense(32768, 0.9)


def test_fidelity_mode(tiny_probe_dir, tmp_path):
    assert harness.main(_args(tiny_probe_dir, tmp_path, "--fidelity")) == 0
    result = json.loads((tmp_path / "fidelity.json").read_text())
    assert result["task"] == "niah_single" and result["length"] == 512
    assert result["environment"]["device"] == "cpu"
    dense, streaming = result["methods"]["dense"], result["methods"]["streaming"]
    for r in (dense, streaming):
        assert len(r["recall"]) == len(r["rel_l2"]) == len(r["density"]) == 2  # layers
        assert all(len(row) == 4 for row in r["recall"])  # query heads
    assert dense["mean_recall"] == pytest.approx(1.0, abs=1e-5)
    assert dense["mean_rel_l2"] == pytest.approx(0.0, abs=1e-5)
    assert streaming["mean_recall"] < 1.0 and streaming["mean_rel_l2"] > 0.0
    assert streaming["mean_density"] < 0.9
    assert (tmp_path / "fidelity.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "results.json").exists()
    assert dense["logit_rel_err"] < 1e-4 and dense["top1_agrees"]  # patched dense = stock model
    assert streaming["logit_rel_err"] > dense["logit_rel_err"]
    assert dense["logit_kl"] < 1e-6 < streaming["logit_kl"]


def test_fidelity_prompt_takes_the_whole_length(tiny_probe_dir, tmp_path):
    """--fidelity generates nothing: no answer room is kept (seed 4's prompt would lose a unit);
    the byte tokenizer's BOS counts in the length."""
    (full,) = make_samples("niah_single", ByteTokenizer(), 511, 1, seed=4, answer_room=False)
    assert full.num_tokens + answer_budget(ByteTokenizer(), full.target) > 511
    assert harness.main(_args(tiny_probe_dir, tmp_path, "--fidelity", "--seed", "4")) == 0
    result = json.loads((tmp_path / "fidelity.json").read_text())
    assert result["length"] == 512 and result["num_tokens"] == full.num_tokens + 1


def test_fidelity_prompt_with_its_bos_stays_within_the_length(
    tiny_probe_dir, tmp_path, monkeypatch
):
    """Seed 1's prompt of 525 tokens took all 525, and the BOS the tokenizer adds made 526: one
    past the model's positions where they are 525."""
    (full,) = make_samples("niah_single", ByteTokenizer(), 525, 1, seed=1, answer_room=False)
    assert full.num_tokens == 525
    seen, load_model = [], harness.load_model

    def recording(*args, **kwargs):
        model, tokenizer, name = load_model(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda _, a, kw: seen.append(kw["input_ids"].shape[1]), with_kwargs=True
        )
        return model, tokenizer, name

    monkeypatch.setattr(harness, "load_model", recording)
    args = _args(tiny_probe_dir, tmp_path, "--fidelity", "--seed", "1", "--fidelity-length", "525")
    args.lengths = None
    assert harness.main(args) == 0
    result = json.loads((tmp_path / "fidelity.json").read_text())
    assert seen and max(seen) <= 525 and result["num_tokens"] == seen[0]


def test_fidelity_as_patched_counts_cost_dense_layers(tiny_probe_dir, tmp_path, monkeypatch):
    assert harness.main(_args(tiny_probe_dir, tmp_path, "--fidelity")) == 0
    planned = json.loads((tmp_path / "fidelity.json").read_text())["methods"]["streaming"]
    assert planned["as_patched"]["cost_dense_layers"] == []  # CPU: the patched model plans all
    assert planned["as_patched"]["mean_recall"] == pytest.approx(planned["mean_recall"])
    assert planned["as_patched"]["mean_density"] == pytest.approx(planned["mean_density"])

    streaming_dense = lambda *a: a[0].name == "streaming"  # noqa: E731
    monkeypatch.setattr(model_fidelity, "cost_model_runs_dense", streaming_dense)
    assert harness.main(_args(tiny_probe_dir, tmp_path, "--fidelity")) == 0
    streaming = json.loads((tmp_path / "fidelity.json").read_text())["methods"]["streaming"]
    assert streaming["as_patched"] == {"cost_dense_layers": [0, 1], "mean_recall": 1.0,
                                       "mean_density": 1.0}  # fmt: skip
    assert streaming["mean_recall"] < 1.0  # the planner's own numbers stay


def test_fidelity_as_patched_counts_a_prompt_under_min_prefill_length_dense(
    tiny_probe_dir, tmp_path
):
    config = tmp_path / "short.json"  # the patch runs a 512-token prompt dense under it
    prefill = {"method": "streaming", "sink_tokens": 4, "window_tokens": 64}
    config.write_text(json.dumps({"prefill": prefill, "min_prefill_length": 4096}))
    args = _args(tiny_probe_dir, tmp_path / "out", "--fidelity", methods=str(config))
    assert harness.main(args) == 0
    short = json.loads((tmp_path / "out" / "fidelity.json").read_text())["methods"]["short"]
    assert short["mean_recall"] < 1.0  # the planner's own numbers
    assert short["as_patched"] == {"cost_dense_layers": [0, 1], "mean_recall": 1.0,
                                   "mean_density": 1.0}  # fmt: skip
    assert short["logit_rel_err"] < 1e-4  # as patched it is the dense model


def test_fidelity_names_cost_dense_layers_by_their_layer_idx(tiny_probe_dir, tmp_path, monkeypatch):
    """A model whose attention layers are not numbered 0..L-1 (here 1 and 3) keeps its numbers."""
    import contextlib
    from types import SimpleNamespace

    from attnsieve.integrations import transformers as integration

    observe = integration.observe_attention

    @contextlib.contextmanager
    def renumbered(model, observer):
        def shifted(module, *args):
            observer(SimpleNamespace(layer_idx=2 * module.layer_idx + 1), *args)

        with observe(model, shifted):
            yield

    monkeypatch.setattr(integration, "observe_attention", renumbered)
    monkeypatch.setattr(model_fidelity, "cost_model_runs_dense", lambda *a: True)
    args = _args(tiny_probe_dir, tmp_path, "--fidelity")
    args.methods = "streaming"
    assert harness.main(args) == 0
    streaming = json.loads((tmp_path / "fidelity.json").read_text())["methods"]["streaming"]
    assert streaming["as_patched"]["cost_dense_layers"] == [1, 3]


def test_fidelity_of_a_per_layer_config_with_an_unplanned_layer(tiny_probe_dir, tmp_path):
    """`calibrate --per-layer` writes None for a layer that runs SDPA: measured as dense."""
    config = tmp_path / "cal.json"
    config.write_text(json.dumps({"prefill": "dense", "layers": {
        "0": {"prefill": None}, "1": {"prefill": {"method": "streaming", "window_tokens": 64}},
    }, "metadata": {"granularity": "layer"}}))  # fmt: skip
    args = _args(tiny_probe_dir, tmp_path / "out", "--fidelity", methods=str(config))
    assert harness.main(args) == 0
    cal = json.loads((tmp_path / "out" / "fidelity.json").read_text())["methods"]["cal"]
    assert cal["recall"][0] == pytest.approx([1.0] * 4, abs=1e-5) and cal["density"][0] == 1.0
    assert min(cal["recall"][1]) < 1.0 and cal["density"][1] < 0.9
    assert cal["as_patched"]["cost_dense_layers"] == [0]


def test_fidelity_of_low_precision_is_against_float32(tiny_probe_dir, tmp_path):
    args = _args(
        tiny_probe_dir, tmp_path, "--fidelity", "--precision", "bf16,int8-fp8", methods="dense"
    )
    assert harness.main(args) == 0
    result = json.loads((tmp_path / "fidelity.json").read_text())["methods"]
    exact, low = result["dense"], result["dense+int8-fp8"]
    assert exact["min_cosine"] > 0.99999  # float32 model: its dense is the reference
    assert 0.99 < low["min_cosine"] < exact["min_cosine"] and low["mean_cosine"] < 1.0
    assert low["mean_density"] == pytest.approx(1.0)
    assert exact["logit_rel_err"] < low["logit_rel_err"] < 0.1


def test_fidelity_of_an_unplanned_layer_at_low_precision_is_sdpa(tiny_probe_dir, tmp_path):
    """The patch runs a layer without a planner through SDPA at the model's precision: measured
    so, not quantized."""
    config = tmp_path / "cal.json"
    config.write_text(json.dumps({"prefill": "dense", "layers": {"0": {"prefill": None}}}))
    args = _args(
        tiny_probe_dir,
        tmp_path / "out",
        "--fidelity",
        "--precision",
        "int8-fp8",
        methods=str(config),
    )
    assert harness.main(args) == 0
    cal = json.loads((tmp_path / "out" / "fidelity.json").read_text())["methods"]["cal+int8-fp8"]
    # float32 model: its SDPA is the reference; the planned layer 1 runs INT8-FP8
    assert min(cal["cosine"][0]) > 0.99999 > min(cal["cosine"][1])


def test_missing_probe_weights_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(probe, "WEIGHTS_DIR", tmp_path / "weights")
    args = _args("probe", tmp_path)
    assert eval_cli(args) == 2
    err = capsys.readouterr().err
    assert "probe weights not found" in err and "README.md" in err


@pytest.mark.parametrize(
    ("extra", "label"),
    [
        (("--kv", "snapkv"), "dense+snapkv@0.25"),
        (("--decode", "quest"), "dense+quest@0.125"),
        (("--precision", "bf16,int8-fp8+fp8-kv"), "dense+int8-fp8+fp8-kv"),
        ((), "kvfile"),  # a config file's own KV policy, in one layer
    ],
)
def test_fidelity_refuses_the_decode_side_roles(tiny_probe_dir, tmp_path, capsys, extra, label):
    """--fidelity measures prefill layouts: KV policies, selectors and an FP8 KV cache would go
    unmeasured under their labels."""
    config = tmp_path / "kvfile.json"
    config.write_text(json.dumps({"prefill": "dense", "layers": {"1": {"kv": "streaming"}}}))
    args = _args(
        tiny_probe_dir,
        tmp_path / "out",
        "--fidelity",
        *extra,
        methods=f"dense,{config}" if not extra else "dense",
    )
    assert eval_cli(args) == 2
    err = capsys.readouterr().err
    assert label in err and "--fidelity" in err and "\n" not in err.rstrip("\n")
    assert not (tmp_path / "out" / "fidelity.json").exists()


def test_fidelity_takes_kv_none(tiny_probe_dir, tmp_path):
    args = _args(
        tiny_probe_dir, tmp_path, "--fidelity", "--kv", "none", "--decode", "none", methods="dense"
    )
    assert harness.main(args) == 0


def test_unknown_task_and_method_are_errors(tiny_probe_dir, tmp_path, capsys):
    args = _args(tiny_probe_dir, tmp_path)
    args.tasks = "niah_single,nope"
    assert eval_cli(args) == 2
    assert "unknown tasks ['nope']" in capsys.readouterr().err
    args = _args(tiny_probe_dir, tmp_path, methods="dense,no_such_planner")
    assert eval_cli(args) == 2
    assert "no_such_planner" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text",
    [
        '{"streaming": {"window_tokens": 64}',
        '{"streaming": 5}',
        '{"streming": {"window_tokens": 64}}',
        '{"streaming": {"method": "dense"}}',  # would run dense labelled streaming
    ],
)
def test_bad_method_kwargs_name_the_option(text, capsys):
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    args = parser.parse_args(
        ["--model", "probe", "--methods", "streaming", "--method-kwargs", text]
    )
    with pytest.raises(ValueError, match="^--method-kwargs: "):
        sweep_args.method_configs(args)  # a typo'd planner would run at its defaults unnoticed


@pytest.mark.parametrize(
    "options, error, message",
    [
        (["--methods", "nope"], ValueError, "--methods: nope: unknown prefill method 'nope'"),
        (["--kv", "nope"], ValueError, "--kv: unknown kv method 'nope'"),
        (["--decode", "nope"], ValueError, "--decode: unknown decode method 'nope'"),
        (["--precision", "fp16"], ValueError, "--precision: expected one of"),
        (["--min-prefill-length", "0"], ValueError, "--min-prefill-length: expected an int >= 1"),
        (
            ["--methods", "flexprefill", "--method-kwargs", '{"flexprefill": {"gamma": 2}}'],
            ValueError,
            "--method-kwargs: flexprefill: gamma: expected a number in [0.0, 1.0]",
        ),
        (
            ["--kv", "snapkv", "--decode", "tidaldecode"],
            ValueError,
            "--decode, --kv: TidalDecode reuses",
        ),
    ],
)
def test_a_bad_axis_is_named_by_its_option(options, error, message):
    """The config's errors named its fields ("kv: unknown kv method"), not the options."""
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    args = parser.parse_args(["--model", "probe", "--methods", "dense", *options])
    with pytest.raises(error, match="^" + re.escape(message)):
        sweep_args.method_configs(args)


def test_an_unknown_backend_is_refused_with_the_choices(capsys):
    """Not the config's "expected None or one of": None is no value an option can give."""
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "probe", "--backend", "cuda"])
    err = capsys.readouterr().err
    assert "--backend: invalid choice: 'cuda' (choose from" in err and "None" not in err


def test_a_config_files_own_field_is_not_named_by_an_option(tmp_path):
    """A field the file set, not the command line, keeps its name."""
    path = tmp_path / "config.json"
    path.write_text('{"prefill": "dense", "kv": {"method": "snapkv"}}')
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    args = parser.parse_args(
        ["--model", "probe", "--methods", str(path), "--decode", "tidaldecode"]
    )
    with pytest.raises(ValueError, match="^decode, kv: TidalDecode reuses"):
        sweep_args.method_configs(args)


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "cannot read the config file"),
        ("{bad", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        # read into a dict first, its errors named "source:" (neither the file nor --methods)
        ('{"prefil": "dense"}', "unknown keys ['prefil']"),
        ('{"prefill": "nope"}', "prefill: unknown prefill method"),
    ],
)
def test_a_bad_config_file_among_methods_is_named(text, message, tmp_path):
    path = tmp_path / "config.json"
    if text is not None:
        path.write_text(text)
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    args = parser.parse_args(["--model", "probe", "--methods", f"dense,{path}"])
    with pytest.raises(ValueError, match="^" + re.escape(f"--methods: {path}: {message}")):
        sweep_args.method_configs(args)


def test_bf16_leaves_a_config_files_precision(tmp_path):
    """--precision bf16, the default, leaves a config file's own precision (as bench e2e does);
    another precision replaces it; a planner named on the command line runs in each."""
    path = tmp_path / "q8.json"
    path.write_text(json.dumps({"prefill": "streaming", "precision": "int8-fp8+fp8-kv"}))
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    for argv, want in (
        ([], {"dense": "bf16", "q8": "int8-fp8+fp8-kv"}),
        (
            ["--precision", "bf16,fp8-kv"],
            {
                "dense": "bf16",
                "dense+fp8-kv": "fp8-kv",
                "q8": "int8-fp8+fp8-kv",
                "q8+fp8-kv": "fp8-kv",
            },
        ),
    ):
        args = parser.parse_args(["--model", "probe", "--methods", f"dense,{path}", *argv])
        got = {label: config.precision for label, config in sweep_args.method_configs(args)}
        assert got == want


def test_options_that_nothing_would_read_are_refused_and_given_ones_win(tmp_path):
    """--method-kwargs for a planner not among --methods and --kv-ratio where every --kv file
    sets its own size were silently ignored; --min-prefill-length and --backend, given, replace
    a config file's own (the file's won), and left out keep it."""
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"prefill": "streaming", "min_prefill_length": 4096}))
    sized = tmp_path / "kvsized.json"
    sized.write_text(json.dumps({"method": "snapkv", "ratio": 0.1}))
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)

    def configs(*argv):
        args = parser.parse_args(["--model", "probe", *argv])
        return dict(sweep_args.method_configs(args))

    with pytest.raises(ValueError, match=r"^--method-kwargs: \['streaming'\] not among --methods"):
        configs("--methods", f"dense,{config}", "--method-kwargs", json.dumps(STREAMING))
    with pytest.raises(ValueError, match="^--kv-ratio: every --kv entry sets its own"):
        configs("--methods", "dense", "--kv", str(sized), "--kv-ratio", "0.5")
    assert configs("--methods", "dense", "--kv", f"{sized},snapkv", "--kv-ratio", "0.5")
    kept = configs("--methods", f"dense,{config}")
    assert (kept["dense"].min_prefill_length, kept["cfg"].min_prefill_length) == (1, 4096)
    given = configs(
        "--methods", f"dense,{config}", "--min-prefill-length", "8", "--backend", "reference"
    )
    assert {c.min_prefill_length for c in given.values()} == {8}
    assert {c.backend for c in given.values()} == {"reference"}


def test_eval_kv_and_decode_axes(tiny_probe_dir, tmp_path, capsys):
    args = _args(
        tiny_probe_dir,
        tmp_path,
        "--kv",
        "none,snapkv",
        "--kv-ratio",
        "0.25",
        "--decode",
        "quest",
        methods="dense",
    )
    args.tasks, args.samples = "passkey", 1
    assert harness.main(args) == 0
    cells = {c["method"]: c for c in json.loads((tmp_path / "results.json").read_text())["cells"]}
    assert set(cells) == {"dense+quest@0.125", "dense+snapkv@0.25+quest@0.125"}
    full, snap = cells["dense+quest@0.125"], cells["dense+snapkv@0.25+quest@0.125"]
    # the context is compressed to a quarter: far less KV memory than keeping every token
    assert snap["kv_memory_mib"] < 0.6 * full["kv_memory_mib"]
    assert snap["decode_tokens_per_s"] is None or snap["decode_tokens_per_s"] > 0
    assert (tmp_path / "kv_frontier.png").stat().st_size > 0
    # dense is among --methods, but every label has a decode selector: no baseline cell
    assert "needs a cell labelled 'dense'" in capsys.readouterr().err


def test_question_in_window_compresses_after_the_question(tiny_probe_dir, tmp_path, monkeypatch):
    """--question-in-window prefills the whole prompt before the KV policy runs (SnapKV's
    setting), where the default compresses the context alone (kvpress's); its cells have keys of
    their own, so a run of the default protocol is not resumed as one of it. A cell without a KV
    policy is the same under both: resumed."""
    contexts = []
    run_generate = harness.run_generate

    def spy(model, ids, *args):
        contexts.append((ids.shape[1], args[5]))  # (prompt tokens, tokens before compression)
        return run_generate(model, ids, *args)

    monkeypatch.setattr(harness, "run_generate", spy)
    args = _args(tiny_probe_dir, tmp_path, "--kv", "none,snapkv", methods="dense")
    args.tasks, args.samples = "passkey", 1
    assert harness.main(args) == 0
    (_, (prompt, context)) = contexts  # dense, then dense+snapkv
    assert context < prompt
    args.question_in_window = True
    assert harness.main(args) == 0  # dense resumed, dense+snapkv run again
    assert contexts[2:] == [(prompt, None)]
    cells = [json.loads(line) for line in (tmp_path / "cells.jsonl").read_text().splitlines()]
    assert [(c["method"], c["question_in_window"]) for c in cells] == [
        ("dense", False), ("dense+snapkv@0.25", False), ("dense+snapkv@0.25", True)
    ]  # fmt: skip


def test_question_in_window_without_a_kv_policy_is_refused(tiny_probe_dir, tmp_path, capsys):
    args = _args(tiny_probe_dir, tmp_path, "--question-in-window", "--decode", "quest")
    assert eval_cli(args) == 2
    assert "--question-in-window: applies to methods with a KV policy" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "env", "option"),
    [(["--backend", "triton"], None, "--backend"), ([], "triton", "$ATTNSIEVE_BACKEND")],
)
def test_triton_prefill_on_a_float32_model_is_refused_before_it_loads(
    tiny_probe_dir, tmp_path, capsys, monkeypatch, extra, env, option
):
    """The Triton prefill kernels take float16 and bfloat16: on the CPU's float32 default every
    cell failed once the model had loaded and the progress bar had started."""
    from attnsieve.eval import harness

    if env is None:
        monkeypatch.delenv("ATTNSIEVE_BACKEND", raising=False)
    else:
        monkeypatch.setenv("ATTNSIEVE_BACKEND", env)
    monkeypatch.setattr(harness, "load_model", lambda *a, **k: pytest.fail("loaded"))
    assert eval_cli(_args(tiny_probe_dir, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert f"{option}: the triton backend's prefill (dense, streaming) runs float16 or " in err
    assert "--dtype auto is torch.float32 on cpu: give --dtype bf16 or fp16" in err


def test_triton_decode_alone_on_a_float32_model_is_not_refused(
    tiny_probe_dir, tmp_path, monkeypatch
):
    """The decode kernel takes float32: a config that plans no prompt runs on the Triton
    backend of a float32 model (the model loads)."""
    from attnsieve.eval import harness

    config = tmp_path / "quest_only.json"
    config.write_text('{"prefill": null, "decode": {"method": "quest", "ratio": 0.5}}')

    class Loaded(Exception):
        pass

    def load(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(harness, "load_model", load)
    args = _args(tiny_probe_dir, tmp_path / "out", "--backend", "triton", methods=str(config))
    with pytest.raises(Loaded):
        harness.main(args)


def test_a_config_that_does_not_fit_the_model_is_refused_before_it_loads(
    tiny_probe_dir, tmp_path, capsys, monkeypatch
):
    """A layer past the model's last was found in the first cell, after the model had loaded
    and the progress bar had started, in a message naming no option."""
    from attnsieve.eval import harness

    config = tmp_path / "far.json"
    config.write_text('{"layers": {"99": {"prefill": "streaming"}}}')
    monkeypatch.setattr(harness, "load_model", lambda *a, **k: pytest.fail("loaded"))
    assert eval_cli(_args(tiny_probe_dir, tmp_path / "out", methods=str(config))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert "--methods: far: layers[99]: the model has " in err


def test_paged_cells_report_the_whole_prompt_density(tiny_probe_dir, tmp_path):
    """A cell on the paged cache prefills context then question; its density is the prompt's,
    not the question chunk's (nor None where the question ran over a compressed cache)."""
    args = _args(tiny_probe_dir, tmp_path, "--kv", "none,snapkv", "--kv-ratio", "0.5")
    args.methods, args.tasks, args.samples = "streaming", "passkey", 1
    args.precision = "bf16,fp8-kv"
    assert harness.main(args) == 0
    cells = {c["method"]: c for c in json.loads((tmp_path / "results.json").read_text())["cells"]}
    plain = cells["streaming"]["density"]
    assert plain < 0.9
    assert cells["streaming+fp8-kv"]["density"] == pytest.approx(plain, abs=0.02)
    for label in ("streaming+snapkv@0.5", "streaming+snapkv@0.5+fp8-kv"):
        # the question over the compressed cache counts as dense attention, weighted by its pairs
        assert plain < cells[label]["density"] < 1.0, label


def _counted_passkey_run(tiny_probe_dir, tmp_path, monkeypatch):
    """(calls, args): a one-cell dense passkey run whose cells computed (not resumed) are counted
    in ``calls``."""
    calls = []
    run_cell = harness.run_cell

    def counting(*args, **kwargs):
        calls.append(1)
        return run_cell(*args, **kwargs)

    monkeypatch.setattr(harness, "run_cell", counting)
    args = _args(tiny_probe_dir, tmp_path, methods="dense")
    args.tasks, args.samples = "passkey", 1
    return calls, args


def test_resume_keys_hold_the_tasks_version(tiny_probe_dir, tmp_path, monkeypatch):
    """Cells of samples from before a change to the tasks (the fifty-first session's multikey
    keys) resumed as if current: the samples' version is part of a cell's identity."""
    calls, args = _counted_passkey_run(tiny_probe_dir, tmp_path, monkeypatch)
    assert harness.main(args) == 0 and len(calls) == 1
    assert harness.main(args) == 0 and len(calls) == 1  # resumed
    monkeypatch.setattr(harness, "TASKS_VERSION", harness.TASKS_VERSION + 1)
    assert harness.main(args) == 0 and len(calls) == 2


def test_one_device_spelled_two_ways_resumes(tiny_probe_dir, tmp_path, monkeypatch):
    """Cells are keyed by the device the model runs on: `cpu:0` after `cpu` (as `cuda:0` after
    `cuda`) resumes; the device string as typed keyed them apart."""
    calls, args = _counted_passkey_run(tiny_probe_dir, tmp_path, monkeypatch)
    assert harness.main(args) == 0 and len(calls) == 1
    args.device = "cpu:0"
    assert harness.main(args) == 0 and len(calls) == 1


def test_the_shipped_probe_resumes_whatever_the_working_folder(tmp_path, monkeypatch):
    """``--model probe`` loads the shipped weights; its cells were keyed by a folder named probe
    in the working directory when there was one (the run again, under that folder's name)."""
    from attnsieve.eval.probe import weights_dir

    calls, args = _counted_passkey_run(weights_dir(), tmp_path, monkeypatch)
    args.model = "probe"
    assert harness.main(args) == 0 and len(calls) == 1
    (tmp_path / "cwd" / "probe").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert harness.main(args) == 0 and len(calls) == 1
    weights = (weights_dir() / "model.safetensors").resolve()
    source = json.loads((tmp_path / "results.json").read_text())["model_source"]
    assert source == f"probe:{weights}:{weights.stat().st_size}"


def test_resume_keys_hold_dtype_and_model_path(tiny_probe_dir, tmp_path, monkeypatch):
    calls, args = _counted_passkey_run(tiny_probe_dir, tmp_path, monkeypatch)
    assert harness.main(args) == 0 and len(calls) == 1
    args.dtype = "bfloat16"  # another precision: not the float32 cell again
    assert harness.main(args) == 0 and len(calls) == 2
    cells = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert [c["dtype"] for c in cells] == ["bfloat16"]
    copy = tmp_path / "other" / tiny_probe_dir.name  # the same folder name elsewhere
    shutil.copytree(tiny_probe_dir, copy)
    args.model = str(copy)
    assert harness.main(args) == 0 and len(calls) == 3


def test_resume_keys_hold_the_rope_scale_of_a_model_path(tiny_probe_dir, tmp_path, monkeypatch):
    calls, args = _counted_passkey_run(tiny_probe_dir, tmp_path, monkeypatch)
    assert harness.main(args) == 0 and len(calls) == 1
    args.rope_scale = 2.0  # another model (YaRN): not the unscaled cell again
    assert harness.main(args) == 0 and len(calls) == 2
    assert harness.main(args) == 0 and len(calls) == 2  # its own cell resumes


def _probe_config(monkeypatch, tiny_probe_dir):
    """The probe's config (positions, layers, heads) and tokenizer for a model name that a
    test's stand-in load_model maps to it."""
    text_config = harness.model_text_config(str(tiny_probe_dir))
    tokenizer = harness.spec_tokenizer(str(tiny_probe_dir))
    monkeypatch.setattr(harness, "model_text_config", lambda *a, **k: text_config)
    monkeypatch.setattr(harness, "spec_tokenizer", lambda *a, **k: tokenizer)


def test_resume_keys_tell_hub_models_of_one_name_apart(tiny_probe_dir, tmp_path, monkeypatch):
    calls = []
    run_cell, load_model = harness.run_cell, harness.load_model

    def counting(*args, **kwargs):
        calls.append(1)
        return run_cell(*args, **kwargs)

    def hub(spec, **kwargs):  # stands in for two Hub ids whose names end alike
        model, tokenizer, _ = load_model(str(tiny_probe_dir), **kwargs)
        return model, tokenizer, spec.split("/")[-1]

    monkeypatch.setattr(harness, "run_cell", counting)
    monkeypatch.setattr(harness, "load_model", hub)
    _probe_config(monkeypatch, tiny_probe_dir)
    args = _args("org-a/model", tmp_path, methods="dense")
    args.tasks, args.samples = "passkey", 1
    assert harness.main(args) == 0 and len(calls) == 1
    args.model = "org-b/model"  # another model: not org-a's cell again
    assert harness.main(args) == 0 and len(calls) == 2


def test_resume_keys_tell_smollm2_gguf_files_apart(tiny_probe_dir, tmp_path, monkeypatch):
    """--model smollm2 names whichever GGUF file $ATTNSIEVE_SMOLLM2_GGUF (or the package) holds:
    another file (e.g. another quantisation) is another model, the same file resumes."""
    calls = []
    run_cell, load_model = harness.run_cell, harness.load_model

    def counting(*args, **kwargs):
        calls.append(1)
        return run_cell(*args, **kwargs)

    def smollm2(spec, **kwargs):  # the probe stands in for the GGUF's model
        model, tokenizer, _ = load_model(str(tiny_probe_dir), **kwargs)
        return model, tokenizer, spec

    monkeypatch.setattr(harness, "run_cell", counting)
    monkeypatch.setattr(harness, "load_model", smollm2)
    _probe_config(monkeypatch, tiny_probe_dir)
    q4, q8 = tmp_path / "q4" / "model.gguf", tmp_path / "q8" / "model.gguf"
    for path, size in ((q4, 10), (q8, 20)):
        path.parent.mkdir()
        path.write_bytes(b"\0" * size)
    args = _args("smollm2", tmp_path / "out", methods="dense")
    args.tasks, args.samples = "passkey", 1
    monkeypatch.setenv("ATTNSIEVE_SMOLLM2_GGUF", str(q4))
    assert harness.main(args) == 0 and len(calls) == 1
    monkeypatch.setenv("ATTNSIEVE_SMOLLM2_GGUF", str(q8))
    assert harness.main(args) == 0 and len(calls) == 2
    assert harness.main(args) == 0 and len(calls) == 2  # its own cell resumes


def test_smollm2_gguf_gone_after_loading_is_a_one_line_error(
    tiny_probe_dir, tmp_path, monkeypatch, capsys
):
    """The resume key of --model smollm2 reads the GGUF file again after the model loaded: a file
    gone by then (or any other error finding it) is main's one-line error, exit 2, no traceback."""
    load_model = harness.load_model
    gguf = tmp_path / "q4" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"\0" * 10)

    def smollm2(spec, **kwargs):  # loads, then the file goes (replaced, unmounted, deleted)
        model, tokenizer, _ = load_model(str(tiny_probe_dir), **kwargs)
        gguf.unlink()
        return model, tokenizer, spec

    monkeypatch.setattr(harness, "load_model", smollm2)
    _probe_config(monkeypatch, tiny_probe_dir)
    monkeypatch.setenv("ATTNSIEVE_SMOLLM2_GGUF", str(gguf))
    args = _args("smollm2", tmp_path / "out", methods="dense")
    args.tasks, args.samples = "passkey", 1
    assert eval_cli(args) == 2
    lines = capsys.readouterr().err.splitlines()  # the loading progress bar, then the error
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("attnsieve eval: error: ")
    assert "ATTNSIEVE_SMOLLM2_GGUF" in errors[0] and "Traceback" not in "".join(lines)


@pytest.mark.parametrize(
    "option, text, error",
    [
        ("tasks", "passkey,niah_single,passkey", "--tasks: ['passkey'] given twice"),
        ("lengths", "512,4k,4096", "--lengths: [4096] given twice"),
        ("tasks", " , ", "--tasks: expected a comma-separated list, got ' , '"),
        ("lengths", ",", "--lengths: expected a comma-separated list, got ','"),
        ("tasks", "passkey,nope", "--tasks: unknown tasks ['nope']"),
    ],
)
def test_a_length_or_task_given_twice_or_none_is_refused(
    tiny_probe_dir, tmp_path, monkeypatch, capsys, option, text, error
):
    """A length or task given twice ran once, silently, where --methods refuses its repeats."""
    monkeypatch.setattr(harness, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    args = _args(tiny_probe_dir, tmp_path, methods="dense")
    setattr(args, option, text)
    assert eval_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"attnsieve eval: error: {error}")


def test_a_cell_line_cut_short_runs_again(tiny_probe_dir, tmp_path, capsys):
    args = _args(tiny_probe_dir, tmp_path, methods="dense")
    args.tasks, args.samples = "passkey", 1
    assert harness.main(args) == 0
    path = tmp_path / "cells.jsonl"
    path.write_text(path.read_text()[:-200])  # a write cut off by a killed run
    assert harness.main(args) == 0
    assert "cells.jsonl:1: a cell cut short" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "results.json").read_text())["cells"]) == 1


def test_a_cell_after_a_line_cut_short_is_kept(tiny_probe_dir, tmp_path, monkeypatch, capsys):
    """The cell run again after a line cut short was appended to that line's bytes: lost, and run
    again, on every run."""
    calls, args = _counted_passkey_run(tiny_probe_dir, tmp_path, monkeypatch)
    assert harness.main(args) == 0
    path = tmp_path / "cells.jsonl"
    path.write_text(path.read_text()[:100])  # a run killed while writing its cell
    assert harness.main(args) == 0 and len(calls) == 2
    assert "cells.jsonl:1: a cell cut short" in capsys.readouterr().err
    assert harness.main(args) == 0 and len(calls) == 2  # kept
    assert "cut short" not in capsys.readouterr().err
    assert [json.loads(line)["method"] for line in path.read_text().splitlines()] == ["dense"]


def test_a_last_cell_without_its_newline_keeps_a_line_of_its_own(tmp_path):
    path = tmp_path / "cells.jsonl"
    cell = json.dumps(dict.fromkeys(harness._CELL_FIELDS, 0))
    path.write_text(cell)  # e.g. edited by hand: the next cell appended would join it
    assert len(harness._read_jsonl(path)) == 1
    assert path.read_text() == cell + "\n"


@pytest.mark.parametrize("line", ["{}", "[1]", "drop-accuracy", "drop-prefill_seconds"])
def test_a_line_that_is_no_cell_is_refused_by_file_and_line(tiny_probe_dir, tmp_path, line):
    """A cells.jsonl line that parses but is not a cell (edited by hand) was a KeyError
    traceback, or an error about list indices: now one error naming the file and line. The
    summary and the frontier plot read prefill_seconds too (a KeyError after the sweep)."""
    path = tmp_path / "cells.jsonl"
    if line.startswith("drop-"):
        args = _args(tiny_probe_dir, tmp_path, methods="dense")
        args.tasks, args.samples = "passkey", 1
        assert harness.main(args) == 0
        cell = json.loads(path.read_text())
        del cell[line.removeprefix("drop-")]
        line = json.dumps(cell)
    path.write_text(line + "\n")
    args = _args(tiny_probe_dir, tmp_path, methods="dense")
    args.tasks, args.samples = "passkey", 1
    with pytest.raises(ValueError, match=r"^--out: .*cells\.jsonl:1: not a cell of attnsieve eval"):
        harness.main(args)


def test_a_cell_of_an_older_version_runs_again(tiny_probe_dir, tmp_path):
    """A cell written before a field was added or renamed (kv_memory_mb before kv_memory_mib,
    under an older TASKS_VERSION key) stopped the sweep with 'not a cell': it must run again."""
    path = tmp_path / "cells.jsonl"
    args = _args(tiny_probe_dir, tmp_path, methods="dense")
    args.tasks, args.samples = "passkey", 1
    assert harness.main(args) == 0
    cell = json.loads(path.read_text())
    old = {**cell, "key": cell["key"].replace("|tasks-v", "|tasks-v0"), "kv_memory_mb": 1.0}
    del old["kv_memory_mib"]
    path.write_text(json.dumps(old) + "\n")
    assert harness.main(args) == 0
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["key"] for line in lines] == [old["key"], cell["key"]]


def test_two_configs_of_one_name_are_refused(tiny_probe_dir, tmp_path, capsys):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "calibration.json").write_text('{"prefill": "dense"}')
    args = _args(
        tiny_probe_dir,
        tmp_path,
        methods=f"{tmp_path / 'a' / 'calibration.json'},{tmp_path / 'b' / 'calibration.json'}",
    )
    assert eval_cli(args) == 2
    assert "two entries would be labelled ['calibration']" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, option, twice",
    [
        (["--methods", "dense,streaming,dense"], "--methods", "dense"),
        (["--kv", "snapkv, snapkv"], "--kv", "snapkv"),
        (["--decode", "none,quest,none"], "--decode", "none"),
        (["--precision", "bf16,bf16"], "--precision", "bf16"),
    ],
)
def test_an_entry_given_twice_is_named_so(argv, option, twice):
    """It was refused as two entries of one label, "config files are labelled by their name:
    rename one", with no config file among them."""
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    args = parser.parse_args(["--model", "probe", "--methods", "dense", *argv])
    with pytest.raises(ValueError, match=rf"^{option}: \['{twice}'\] given twice"):
        sweep_args.method_configs(args)


def test_lengths_beyond_the_model_positions(tiny_probe_dir, tmp_path, capsys):
    args = _args(tiny_probe_dir, tmp_path)
    args.lengths = "64k"  # the probe has 32768 positions
    assert eval_cli(args) == 2
    assert "--lengths: expected 1 to 32768 tokens" in capsys.readouterr().err
    assert sweep_args.within_positions([4096, 8192, 16384], 8192, None) == [4096, 8192]


@pytest.mark.parametrize(
    "extra, option",
    [(["--samples", "3"], "--samples"), (["--tasks", "passkey,niah_single"], "--tasks")],
)
def test_fidelity_refuses_samples_and_tasks_it_would_not_measure(
    tiny_probe_dir, tmp_path, capsys, monkeypatch, extra, option
):
    """--fidelity measured the first task's one prompt and left the others and --samples out."""
    monkeypatch.setattr(harness, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    assert eval_cli(_args(tiny_probe_dir, tmp_path, "--fidelity", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{option}: --fidelity measures one prompt of one task" in err[0]


def test_fidelity_length_beyond_the_model_positions(tiny_probe_dir, tmp_path, capsys, monkeypatch):
    def never(*args):
        raise AssertionError("ran a prompt beyond the model's positions")

    monkeypatch.setattr(harness, "run_fidelity", never)
    args = _args(tiny_probe_dir, tmp_path, "--fidelity", "--fidelity-length", "64k")
    args.lengths = None
    assert eval_cli(args) == 2  # the probe has 32768 positions
    assert "--fidelity-length: expected 1 to 32768 tokens" in capsys.readouterr().err
    for bad in ("4m", ""):  # "" ran at the largest default length
        args.fidelity_length = bad
        assert eval_cli(args) == 2
        assert "--fidelity-length: expected entries like 4k" in capsys.readouterr().err


def test_an_out_folder_that_cannot_be_made_is_refused_first(
    tiny_probe_dir, tmp_path, capsys, monkeypatch
):
    """--out under a file loaded the model, then failed on a bare [Errno 20]."""
    monkeypatch.setattr(harness, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    (tmp_path / "afile").write_text("")
    assert eval_cli(_args(tiny_probe_dir, tmp_path / "afile" / "sub")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: --out: expected a folder" in err[0]


def test_an_empty_out_folder_is_refused(capsys):
    """--out '' wrote into eval-results/MODEL of the working folder, as if no --out were given."""
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--out", ""])
    assert exit_.value.code == 2
    assert "argument --out: expected a folder, got ''" in capsys.readouterr().err


def test_an_out_folder_the_system_refuses_is_named(tiny_probe_dir, capsys):
    """A folder that passes the early check but cannot be made (under /proc, even for root)
    printed a bare [Errno 2] without naming --out."""
    assert eval_cli(_args(tiny_probe_dir, "/proc/attnsieve-no-such-folder")) == 2
    err = capsys.readouterr().err  # after the weights' loading bar
    assert "Traceback" not in err and "[Errno" not in err
    assert "error: --out: cannot make the folder /proc/attnsieve-no-such-folder" in err


def test_fidelity_length_and_lengths_together_are_refused(tiny_probe_dir, tmp_path, capsys):
    """--lengths was checked and then dropped for --fidelity-length."""
    args = _args(tiny_probe_dir, tmp_path, "--fidelity", "--fidelity-length", "256")
    assert eval_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: --lengths, --fidelity-length: " in err[0]
    assert not (tmp_path / "fidelity.json").exists()


def test_positions_of_a_multimodal_model_come_from_its_text_config(monkeypatch):
    import transformers
    from transformers import Gemma3Config  # its positions are in the text config only

    from attnsieve.eval import models

    config = Gemma3Config()
    assert not hasattr(config, "max_position_embeddings")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: config)
    positions = models.model_text_config("gemma3").max_position_embeddings
    assert positions == config.get_text_config().max_position_embeddings


def test_lengths_are_checked_before_the_weights_load(tiny_probe_dir, tmp_path, capsys, monkeypatch):
    """Against the model's config: one line, and no weights loaded for a run that cannot start."""
    monkeypatch.setattr(harness, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    args = _args(tiny_probe_dir, tmp_path)
    args.lengths = "64k"
    assert eval_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lengths: expected 1 to 32768 tokens" in err[0]


def test_split_question_keeps_the_question_out_of_the_context():
    context, question = harness.split_question("text text\nWhat is the pass key? The pass key is")
    assert context == "text text" and question.startswith("\nWhat is the pass key?")
    assert harness.split_question("no question") == ("no question", "")


def test_kv_and_decode_axes_replace_a_config_files_roles_in_every_layer(tmp_path):
    """A given --kv / --decode replaces the file's role in every layer, as `attnsieve run`'s flags
    do (calibrate writes per-layer decode entries); left out, the file keeps its own."""
    path = tmp_path / "cal.json"
    channels = [[0, 1]]
    path.write_text(json.dumps({
        "prefill": "dense", "kv": "snapkv", "decode": "double_sparsity",
        "layers": {"0": {"decode": {"method": "double_sparsity", "channels": channels},
                         "kv": "streaming", "prefill": "streaming"}},
    }))  # fmt: skip
    args = _args("x", tmp_path, "--decode", "quest", "--kv", "none", methods=str(path))
    ((label, config),) = sweep_args.method_configs(args)
    assert label == "cal+quest@0.125"
    assert [type(config.selector(i)).__name__ for i in (0, 1)] == ["Quest", "Quest"]
    assert config.policy(0) is None and config.policy(1) is None
    assert config.layers == {0: {"prefill": "streaming"}}  # the other roles stay
    args = _args("x", tmp_path, methods=str(path))
    ((label, config),) = sweep_args.method_configs(args)
    assert label == "cal"
    assert config.selector(0).channels == tuple(map(tuple, channels))
    assert [type(config.policy(i)).__name__ for i in (0, 1)] == ["StreamingLLM", "SnapKV"]


def test_paired_difference():
    assert harness.paired_difference([1, 0, 1, 1], [1, 1, 0, 0]) == (25.0, 2, 1)
    assert harness.paired_difference([0.5], [0.25]) == (25.0, 1, 0)
    with pytest.raises(ValueError, match="one score per reference sample"):
        harness.paired_difference([1, 0], [1])
    dense = {"method": "dense", "length": 8, "task": "t", "accuracy": 0.5, "density": 1.0,
             "prefill_seconds": 0.1, "scores": [1, 0]}  # fmt: skip
    sparse = {**dense, "method": "flex", "accuracy": 0.0, "density": 0.5, "scores": [0, 0]}
    assert harness.summary_line(sparse, dense).endswith(
        "vs dense -50.0 points (0 samples better, 1 worse)"
    )
    assert "vs dense" not in harness.summary_line(dense, dense)
    assert "vs dense" not in harness.summary_line(sparse, None)
    assert harness.summary_line(sparse, None, 20).startswith(" " * 16 + "flex       8 ")


@pytest.mark.parametrize("option", ["--kv", "--decode", "--precision"])
def test_an_empty_axis_is_refused_not_read_as_its_default(option):
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    args = parser.parse_args(["--model", "probe", "--methods", "dense", option, ""])
    with pytest.raises(ValueError, match=f"^{option}: expected a comma-separated list"):
        sweep_args.method_configs(args)


@pytest.mark.parametrize(
    ("given", "option"),
    [
        (["--kv-ratio", "0.5"], "--kv-ratio"),
        (["--kv", "none", "--kv-ratio", "0.5"], "--kv-ratio"),
        (["--decode-ratio", "0.5"], "--decode-ratio"),
        (["--decode", "none", "--decode-ratio", "0.5"], "--decode-ratio"),
    ],
)
def test_a_ratio_without_a_method_to_read_it_is_refused(given, option):
    """--kv-ratio / --decode-ratio without a policy / selector among --kv / --decode would be
    ignored (a config file among --methods keeps its own budgets): refused instead."""
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    args = parser.parse_args(["--model", "probe", "--methods", "dense", *given])
    with pytest.raises(ValueError, match=f"^{option}: applies to the methods of"):
        sweep_args.method_configs(args)
    args = parser.parse_args(["--model", "probe", "--methods", "dense", *given, "--kv",
                              "none,snapkv", "--decode", "none,quest"])  # fmt: skip
    labels = [label for label, _ in sweep_args.method_configs(args)]
    assert "dense+snapkv@0.5" in labels or "dense+quest@0.5" in labels


def test_ratio_lists_sweep_the_budget(tmp_path):
    """Comma-separated --kv-ratio / --decode-ratio give one config per ratio of each policy or
    selector that takes one; none, and a KV file that sets its own budget, stay one config."""
    sized = tmp_path / "kvsized.json"
    sized.write_text(json.dumps({"method": "snapkv", "budget": 64}))
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    argv = ["--model", "probe", "--methods", "dense", "--kv", f"none,h2o,{sized}", "--kv-ratio",
            "0.1,0.5", "--decode", "none,quest", "--decode-ratio", "0.25,0.125"]  # fmt: skip
    configs = dict(sweep_args.method_configs(parser.parse_args(argv)))
    kvs = ["", "+h2o@0.1", "+h2o@0.5", "+kvsized@64"]
    decodes = ["", "+quest@0.25", "+quest@0.125"]
    assert list(configs) == [f"dense{kv}{decode}" for kv in kvs for decode in decodes]
    snap = configs["dense+h2o@0.5+quest@0.125"]
    assert (snap.kv["ratio"], snap.decode["ratio"]) == (0.5, 0.125)
    assert configs["dense+kvsized@64"].kv == {"method": "snapkv", "budget": 64}
    for bad, pattern in (
        ("0.1,x", r"^--kv-ratio: expected comma-separated numbers, got '0.1,x'"),
        ("0.1,nan", r"^--kv-ratio: expected comma-separated numbers"),
        ("0.5,0.50", r"^--kv-ratio: \['0.5'\] given twice"),
        ("0.1234561,0.1234562", r"^--kv-ratio: \['0.123456'\] given twice"),
        ("0.25,-0.25,1.5", r"^--kv-ratio: expected ratios in \[0, 1\], got \[-0.25, 1.5\]"),
    ):
        args = parser.parse_args(["--model", "probe", "--methods", "dense", "--kv", "h2o",
                                  "--kv-ratio", bad])  # fmt: skip
        with pytest.raises(ValueError, match=pattern):
            sweep_args.method_configs(args)
    args = parser.parse_args(["--model", "probe", "--methods", "dense", "--decode", "quest",
                              "--decode-ratio", "0.5,0"])  # fmt: skip
    with pytest.raises(
        ValueError, match=r"^--decode-ratio: expected ratios in \(0, 1\], got \[0.0\]"
    ):
        sweep_args.method_configs(args)


def test_a_swept_ratio_is_plotted_against_accuracy(tiny_probe_dir, tmp_path):
    args = _args(tiny_probe_dir, tmp_path, "--kv", "none,snapkv", "--kv-ratio", "0.25,0.5",
                 methods="dense")  # fmt: skip
    args.tasks, args.samples = "passkey", 1
    assert harness.main(args) == 0
    cells = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert {c["method"] for c in cells} == {"dense", "dense+snapkv@0.25", "dense+snapkv@0.5"}
    assert (tmp_path / "budget.png").read_bytes().startswith(PNG)


def _budget_cells(tmp_path, *argv):
    """A cell per (label, config) that method_configs gives for ``argv``, as eval records them."""
    parser = argparse.ArgumentParser()
    sweep_args.add_arguments(parser)
    args = parser.parse_args(["--model", "probe", *argv])
    return [
        {"method": label, "config": config.to_dict(), "length": 512, "task": "passkey",
         "accuracy": 0.5}
        for label, config in sweep_args.method_configs(args)
    ]  # fmt: skip


def test_the_budget_plot_draws_each_config_swept_over_one_ratio(tmp_path):
    """Ratios are read from the configs, not parsed from labels: an '@' in a file's name, a KV
    sweep beside a decode selector and a KV policy sized in tokens all misled the label parser."""
    cal = tmp_path / "cal@v2.json"
    cal.write_text(json.dumps({"prefill": {"method": "streaming"}}))
    sized = tmp_path / "sized.json"
    sized.write_text(json.dumps({"method": "snapkv", "budget": 64}))
    cases = (
        (["--methods", "dense", "--kv", "snapkv", "--kv-ratio", "0.125,0.5", "--decode", "quest"],
         {"dense+snapkv@r+quest@0.125": {0.125, 0.5}}),
        (["--methods", "dense", "--kv", "snapkv", "--kv-ratio", "0.25,0.5", "--decode", "quest",
          "--decode-ratio", "0.125,0.25"],
         {"dense+snapkv@r+quest@0.125": {0.25, 0.5}, "dense+snapkv@r+quest@0.25": {0.25, 0.5},
          "dense+snapkv@0.25+quest@r": {0.125, 0.25}, "dense+snapkv@0.5+quest@r": {0.125, 0.25}}),
        (["--methods", f"dense,{cal}", "--kv", "snapkv", "--kv-ratio", "0,0.5"],
         {"dense+snapkv@r": {0.0, 0.5}, "cal@v2+snapkv@r": {0.0, 0.5}}),
        (["--methods", "dense", "--kv", f"none,snapkv,{sized}"], {}),
        (["--methods", "dense", "--kv", "snapkv,h2o"], {}),
    )  # fmt: skip
    for argv, expected in cases:
        cells = _budget_cells(tmp_path, *argv)
        lines = plots.budget_lines(cells)
        assert {name: {r for _, r in points} for name, points in lines.items()} == expected, argv
        png = tmp_path / "budget.png"
        png.unlink(missing_ok=True)
        assert plots.plot_budget(cells, png) == bool(expected)
        assert png.exists() == bool(expected)


def test_fidelity_length_without_fidelity_is_refused(tiny_probe_dir, tmp_path, capsys):
    args = _args(tiny_probe_dir, tmp_path)
    args.fidelity_length = "4k"
    assert eval_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fidelity-length: applies to --fidelity" in err[0]


def test_empty_lengths_are_refused_not_read_as_the_defaults(tiny_probe_dir, tmp_path, capsys):
    args = _args(tiny_probe_dir, tmp_path)
    args.lengths = ""
    assert eval_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lengths: expected a comma-separated list, got ''" in err[0]
