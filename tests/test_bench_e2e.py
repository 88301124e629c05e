"""`attnsieve bench e2e`: decode tokens/s (``--decode-steps``) per config and batch on a tiny
random probe-architecture model (CPU), and the alternating time-to-first-token loop."""

import argparse
import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

from attnsieve import cli  # noqa: E402
from attnsieve.bench import e2e, e2e_decode, e2e_report, e2e_timing  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _argv(model_dir, out, *extra):
    """bench e2e's decode-speed arguments on the tiny model; an option in ``extra`` replaces its
    value here (the command refuses an option given twice)."""
    defaults = {"--model": str(model_dir), "--lengths": "512", "--decode-steps": "3",
                "--batch": "1,2", "--methods": "dense", "--kv": "none,streaming",
                "--decode": "none,quest", "--out": str(out), "--device": DEVICE}  # fmt: skip
    argv = ["bench", "e2e"]
    for option, value in defaults.items():
        if option not in extra:
            argv += [option, value]
    return [*argv, *extra]


def _decode_result(folder):
    """The one decode-speed results file in ``folder``, read."""
    (path,) = folder.glob("e2e_decode_*.json")
    return json.loads(path.read_text())


def test_decode_speed_rows(tiny_probe_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(e2e_decode, "WARMUP_STEPS", 1)  # the CPU reference needs no warm-up
    assert cli.main(_argv(tiny_probe_dir, tmp_path)) == 0
    labels = ["sdpa", "dense", "dense+quest@0.125", "dense+streaming@0.25",
              "dense+streaming@0.25+quest@0.125"]  # fmt: skip
    stem = f"e2e_decode_{tiny_probe_dir.name}_{'-'.join(labels[1:])}"
    result = json.loads((tmp_path / f"{stem}.json").read_text())
    assert (tmp_path / f"{stem}.png").read_bytes().startswith(PNG)
    rows = {(r["label"], r["batch"]): r for r in result["results"]}
    assert len(rows) == len(result["results"]) == 2 * len(labels)
    assert set(rows) == {(label, b) for label in labels for b in (1, 2)}
    assert result["dense_reference"] == "dense" and result["decode_steps"] == 3
    assert result["complete"] is True
    for (_, batch), r in rows.items():
        dense = rows["dense", batch]["tokens_per_s"]
        assert r["length"] == 512 and r["prompt_tokens"] <= 512
        assert r["tokens_per_s"] > 0 and r["ms_per_step"] > 0
        assert r["vs_dense"] == pytest.approx(r["tokens_per_s"] / dense)
        assert rows["sdpa", batch]["vs_sdpa"] == 1
    for batch in (1, 2):
        dense = rows["dense", batch]["kv_mib"]
        assert rows["dense+streaming@0.25", batch]["kv_mib"] < 0.5 * dense
        assert rows["sdpa", batch]["kv_mib"] == dense
    # a batch of two holds twice the cache of one
    assert rows["dense", 2]["kv_mib"] == pytest.approx(2 * rows["dense", 1]["kv_mib"])
    table = capsys.readouterr().out
    assert "tokens_per_s" in table and "dense+streaming@0.25+quest@0.125" in table


@pytest.mark.parametrize(
    "extra, name",
    [
        (["--batch", "0"], "--batch"),
        (["--batch", "1,x"], "--batch"),
        (["--decode-steps", "0"], "--decode-steps"),
        (["--config", "x.json"], "--config"),
        (["--kv", "no_such_policy"], "no_such_policy"),
        (["--no-cost"], "--no-cost"),
    ],
)
def test_bad_arguments_exit_2_naming_them(tiny_probe_dir, tmp_path, capsys, extra, name):
    assert cli.main(_argv(tiny_probe_dir, tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnsieve bench e2e: error: ") and name in err[0]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "decode, extra, name",
    [
        (True, ["--repeats", "3"], "--repeats"),
        (True, ["--layers", "4"], "--layers"),
        (False, ["--layers", "4"], "--layers"),
    ],
)
def test_options_a_mode_ignores_are_refused(tiny_probe_dir, tmp_path, capsys, decode, extra, name):
    """--repeats times first tokens only and --layers sizes the random model only: given in a mode
    that would ignore them (decode speed; a loaded model), they are refused, not dropped."""
    argv = _argv(tiny_probe_dir, tmp_path, *extra)
    if not decode:
        argv = argv[: argv.index("--decode-steps")] + ["--out", str(tmp_path), *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnsieve bench e2e: error: ") and name in err[0]
    assert not list(tmp_path.iterdir())


def test_cpu_runs_decode_speed_only(tiny_probe_dir, tmp_path, capsys):
    """--device cpu is for developing decode speed; time to first token on CPU is refused."""
    argv = _argv(tiny_probe_dir, tmp_path)
    argv = argv[: argv.index("--decode-steps")] + ["--out", str(tmp_path), "--device", "cpu"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "attnsieve bench e2e: error: --device: cpu runs --decode-steps only; time to first token "
        "needs CUDA"
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_decode_speed_without_cuda_needs_device_cpu(tiny_probe_dir, tmp_path, capsys):
    """Decode speed fell back to CPU in silence, though `bench` is labelled GPU: a 32K prompt ran
    for minutes there. Now it asks for CUDA as time to first token does."""
    argv = _argv(tiny_probe_dir, tmp_path)
    device = argv.index("--device")
    assert cli.main(argv[:device] + argv[device + 2 :]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0]
    assert not list(tmp_path.iterdir())


def test_mode_options_take_their_defaults_where_they_apply():
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    args = parser.parse_args([])  # the random model, time to first token
    e2e._mode_options(args, decode=False)
    assert (args.layers, args.repeats) == (e2e.RANDOM_LAYERS, e2e.REPEATS)
    args = parser.parse_args(["--model", "smollm2", "--decode-steps", "4"])
    e2e._mode_options(args, decode=True)
    assert (args.layers, args.repeats) == (None, None)  # neither applies; the command omits them


@pytest.mark.parametrize(
    "lengths, steps, name",
    [("32768", "3", "--lengths"), ("32762", "3", "--lengths"), ("1k", "32764", "--decode-steps")],
)
def test_decode_steps_must_fit_the_positions_after_the_prompt(
    tiny_probe_dir, tmp_path, capsys, monkeypatch, lengths, steps, name
):
    """The prompt, the warm-up and --decode-steps all take positions (the tiny model has 32768):
    a run past them is refused, naming the option, before the model loads."""
    monkeypatch.setattr(e2e, "_load", lambda *a: pytest.fail("the model loaded"))
    argv = _argv(tiny_probe_dir, tmp_path)
    argv[argv.index("--lengths") + 1] = lengths
    argv[argv.index("--decode-steps") + 1] = steps
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"attnsieve bench e2e: error: {name}:")
    assert err[0].endswith("--rope-scale F extends a pretrained model to F x its trained length")


@pytest.mark.parametrize("text", ["0", "4m", "²"])
def test_a_bad_length_names_the_option(text, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(e2e, "_load", lambda *a: pytest.fail("the model loaded"))
    assert cli.main(["bench", "e2e", "--lengths", text, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"attnsieve bench e2e: error: --lengths: expected entries like 4k or 4096, got {text!r}"
    ]


def test_random_model_decode_steps_must_fit_its_positions(tmp_path, capsys, monkeypatch):
    """The random model's 131072 positions were checked only after its 16 GB of weights were
    built; it takes no --rope-scale, so the error does not suggest one."""
    monkeypatch.setattr(e2e, "_load", lambda *a: pytest.fail("the model loaded"))
    argv = ["bench", "e2e", "--lengths", "128k", "--decode-steps", "3", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnsieve bench e2e: error: --lengths:")
    assert "--rope-scale" not in err[0]


def test_decode_lengths_leave_room_for_the_steps():
    """32761 tokens + 4 warm-up + 3 timed steps fill 32768 positions exactly; by default the
    lengths that fit are kept (the random model's 128K ran its steps past its positions)."""
    assert e2e._lengths([32761], "m", 32768, decoded=7) == [32761]
    with pytest.raises(ValueError, match="at most 32761 tokens"):
        e2e._lengths([32762], "m", 32768, decoded=7)
    assert e2e._lengths(None, "m", 32768, decoded=7) == [8192, 16384]
    assert e2e._lengths(None, "m", 32768) == [8192, 16384, 32768]
    assert e2e._lengths(None, e2e.RANDOM_MODEL, 131072, decoded=7) == [65536]
    assert e2e._lengths(None, e2e.RANDOM_MODEL, 131072) == [65536, 131072]


@pytest.mark.parametrize(
    "argv",
    [
        ["--kv", "snapkv"],
        ["--kv-ratio", "0.5"],
        ["--decode-ratio", "0.5"],
        ["--batch", "8"],
        ["--batch", "1,8"],
        ["--paged-cache"],
    ],
)
def test_decode_axes_need_decode_steps(argv):
    """Options of decode speed are refused in time-to-first-token mode, not silently ignored
    (a --batch 8 run would otherwise time a batch of one)."""
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    with pytest.raises(ValueError, match="--decode-steps"):
        e2e._methods(parser.parse_args(argv))


def test_time_to_first_token_sweeps_prefill_precisions(tmp_path):
    """--precision bf16,int8-fp8 times each method in each prefill precision; bf16 keeps a config
    file's own; fp8-kv (a decode precision) is refused by name."""
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"prefill": "streaming", "precision": "int8-fp8"}))
    args = parser.parse_args(["--methods", f"flexprefill,{path}", "--precision", "bf16,int8-fp8"])
    methods = dict(e2e._methods(args))
    assert list(methods) == ["flexprefill", "flexprefill+int8-fp8", "mine", "mine+int8-fp8"]
    assert [c.precision for c in methods.values()] == ["bf16", "int8-fp8", "int8-fp8", "int8-fp8"]
    assert methods["mine"].prefill == methods["mine+int8-fp8"].prefill == "streaming"
    for bad in ("fp8-kv", "bf16,int8-fp8+fp8-kv", ","):
        with pytest.raises(ValueError, match="--precision: time to first token takes"):
            e2e._methods(parser.parse_args(["--precision", bad]))


def test_a_multimodal_model_is_described_from_its_text_config(tmp_path, monkeypatch):
    """Gemma 3's positions and sizes live in its text config only: bench e2e reads them there
    (it raised AttributeError on model.config.max_position_embeddings)."""
    from types import SimpleNamespace

    from transformers import Gemma3Config

    class Reached(Exception):
        pass

    def prompt(*args):
        raise Reached

    config = Gemma3Config()
    model = SimpleNamespace(config=config, dtype=torch.float32)
    monkeypatch.setattr(e2e, "_load", lambda *a, **k: (model, None, "gemma3"))
    monkeypatch.setattr(e2e, "prompt_ids", prompt)
    monkeypatch.setattr(e2e, "_check_prompts", lambda *a: None)  # its tokenizer is the Hub's
    monkeypatch.setattr(  # what models.model_text_config reads, with the weights left alone
        "transformers.AutoConfig.from_pretrained", lambda *a, **k: config
    )
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    argv = ["--model", "some/gemma3", "--lengths", "1k", "--decode-steps", "2", "--device", DEVICE]
    args = parser.parse_args(argv)
    with pytest.raises(Reached):
        e2e.main(args)
    assert e2e._describe(model, "gemma3", args)["layers"] == config.text_config.num_hidden_layers


def test_the_recorded_command_spells_flags_as_flags():
    import argparse

    from attnsieve.bench.e2e_report import command

    args = argparse.Namespace(model="smollm2", lengths=["8k,32k"], no_cost=True, no_graphs=False)
    assert command(args) == "attnsieve bench e2e --model smollm2 --lengths 8k,32k --no-cost"


def test_prefill_timing_alternates_stock_and_patched(monkeypatch):
    """Time to first token: stock and patched forwards alternate after one warm-up each; the
    stock ones run transformers' "sdpa" while the model stays patched, which it still is after."""
    import torch
    import transformers

    from attnsieve.integrations import AttentionConfig, patch

    config = transformers.LlamaConfig(
        vocab_size=32, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    seen = []

    def forward(model, ids):
        seen.append(model.config._attn_implementation)
        return float(len(seen)), torch.zeros(3), 0.0

    monkeypatch.setattr(e2e_timing, "_forward", forward)
    with patch(model, AttentionConfig()):
        ids = torch.zeros(1, 4, dtype=torch.long)
        ticks = []
        stock, patched = e2e_timing.time_alternating(model, ids, 2, "sdpa", tick=ticks.append)
        assert ticks == seen  # the progress bar hears of every forward as it ends
        assert model.config._attn_implementation == "attnsieve"
        e2e_timing.time_alternating(model, ids, 1, "sdpa")
        assert model.config._attn_implementation == "attnsieve"  # an odd count ends on stock
    # ABBA: each goes first in every other pair; the first pair is the warm-up
    assert seen[:6] == ["sdpa", "attnsieve", "attnsieve", "sdpa", "sdpa", "attnsieve"]
    assert [run[0] for run in stock] == [4.0, 5.0] and [run[0] for run in patched] == [3.0, 6.0]
    assert e2e_timing.best(stock) == 4.0 and e2e_timing.median(stock) == 4.5
    assert e2e_timing.median(patched) == 4.5


def test_paged_cache_runs_dense_on_the_paged_cache(tiny_probe_dir, tmp_path, monkeypatch):
    """--paged-cache: the dense config decodes on attnsieve's paged cache and stays the dense
    reference; steps replay CUDA graphs on a GPU and never on the CPU."""
    # three warm-up steps: the first by hand, then a call of two (a lone step runs eagerly: a
    # graph would replay nothing) whose first warms the capture of the second, so the timed steps
    # replay (with two, the timed call captures and rightly reports no replay; the H100 run of
    # benchmarks/results/h100/tests57/ caught the two this test had)
    monkeypatch.setattr(e2e_decode, "WARMUP_STEPS", 3)
    argv = _argv(tiny_probe_dir, tmp_path, "--paged-cache", "--kv", "none", "--batch", "2")
    assert cli.main(argv) == 0
    result = _decode_result(tmp_path)
    labels = {r["label"] for r in result["results"]}
    assert labels == {"sdpa", "dense+paged", "dense+quest@0.125", "attention-free"}
    assert result["dense_reference"] == "dense+paged" and result["graphs"]
    assert result["configs"]["dense+paged"]["paged_cache"]
    replayed = any(r["graph_replayed"] for r in result["results"])
    assert replayed == (DEVICE == "cuda")


def test_attention_free_decode_row_reads_no_cache(tiny_probe_dir, tmp_path, monkeypatch):
    """The bound's row decodes as the dense config on the paged cache, but no step calls the
    decode kernel (the cache still fills); without --paged-cache there is no such row (its dense
    reference would decode another way)."""
    from attnsieve.integrations import paged

    monkeypatch.setattr(e2e_decode, "WARMUP_STEPS", 1)
    reads: dict[str, int] = {}
    time_decode, decode_attention = e2e_decode.time_decode, paged.decode_attention
    labels = iter(["sdpa", "dense+paged", "attention-free"])  # the order of the cells
    cell = [None]

    def each_cell(*args, **kwargs):
        cell[0] = next(labels)
        return time_decode(*args, **kwargs)

    def counted(*args, **kwargs):
        reads[cell[0]] = reads.get(cell[0], 0) + 1
        return decode_attention(*args, **kwargs)

    monkeypatch.setattr(e2e_decode, "time_decode", each_cell)
    monkeypatch.setattr(paged, "decode_attention", counted)
    flags = ["--kv", "none", "--decode", "none", "--batch", "1"]
    assert cli.main(_argv(tiny_probe_dir, tmp_path / "paged", "--paged-cache", *flags)) == 0
    result = _decode_result(tmp_path / "paged")
    rows = {r["label"]: r for r in result["results"]}
    assert set(rows) == {"sdpa", "dense+paged", "attention-free"}
    assert reads["dense+paged"] >= 2 * 3 and "attention-free" not in reads  # 2 layers, 3 steps
    free, dense = rows["attention-free"], rows["dense+paged"]
    assert free["vs_dense"] == pytest.approx(free["tokens_per_s"] / dense["tokens_per_s"])
    assert free["kv_mib"] == dense["kv_mib"]

    labels = iter(["sdpa", "dense"])
    assert cli.main(_argv(tiny_probe_dir, tmp_path / "dense", *flags)) == 0
    result = _decode_result(tmp_path / "dense")
    assert {r["label"] for r in result["results"]} == {"sdpa", "dense"}


def _tiny_llama():
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=32, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
    )  # fmt: skip
    return transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()


def test_attention_free_forward_skips_attention_and_restores_the_model(monkeypatch):
    """The bound's forward runs every layer with attention replaced by zeros (so its hidden states
    differ from the stock model's) and gives the model back its attention implementation."""
    import torch

    model = _tiny_llama()
    ids = torch.randint(0, 32, (1, 7), generator=torch.Generator().manual_seed(0))
    seen = []

    def forward(model, ids):
        seen.append(model.config._attn_implementation)
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
        seen.append(out.hidden_states[1])
        return float(len(seen)), out.logits[0, -1], 0.0

    monkeypatch.setattr(e2e_timing, "_forward", forward)
    # the best of the runs after the warm-up
    ticks = []
    assert e2e_timing.time_attention_free(model, ids, 2, tick=ticks.append) == 4.0
    assert seen[0::2] == ticks == [e2e_timing.ATTENTION_FREE] * 3
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        stock = model(input_ids=ids, output_hidden_states=True).hidden_states[1]
        embedded = model.model.embed_tokens(ids)
    free = seen[1]
    assert not torch.allclose(free, stock)
    # attention contributes nothing: the first layer's output is its input plus the MLP's alone
    layer = model.model.layers[0]
    with torch.no_grad():
        expected = embedded + layer.mlp(layer.post_attention_layernorm(embedded))
    torch.testing.assert_close(free, expected)


def test_plot_draws_the_attention_free_bound(tmp_path):
    rows = [{"length": n, "sdpa_ttft_s": 0.1 * n, "attention_free_ttft_s": 0.02 * n,
             "speedup_bound": 5.0, "methods": {"flexprefill": {"ttft_s": 0.05 * n, "speedup": 2.0,
                                                               "mean_density": 0.3}}}
            for n in (1, 2)]  # fmt: skip
    result = {"results": rows, "methods": {"flexprefill": {}}, "sdpa_backend": "CUDNN_ATTENTION",
              "correctness_check": {"passed": True}, "environment": {"device": "cpu"},
              "model": {"name": "m", "layers": 2, "weights": "random"}}  # fmt: skip
    e2e_report.plot(result, tmp_path / "e2e.png")
    assert (tmp_path / "e2e.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize("failed", ["bf16", "int8-fp8"])
def test_plot_draws_the_speed_ups_each_precision_check_allowed(monkeypatch, tmp_path, failed):
    """Each precision's check gates its own methods' speed-ups: the plot drew the speed-up panel
    only where the bf16 check passed, so a passing INT8·FP8 method's speed-ups (in the JSON) were
    never drawn, and drew a failed one's as an empty line."""
    panels = []
    monkeypatch.setattr(e2e_report, "save_line_plots", lambda path, p, title: panels.extend(p))
    speedups = {"streaming": 2.0, "streaming+int8-fp8": 3.0}
    speedups[{"bf16": "streaming", "int8-fp8": "streaming+int8-fp8"}[failed]] = None
    rows = [{"length": 4096, "sdpa_ttft_s": 0.4, "attention_free_ttft_s": 0.1,
             "speedup_bound": 4.0, "methods": {label: {"ttft_s": 0.2, "speedup": s,
                                                       "mean_density": 0.3}
                                               for label, s in speedups.items()}}]  # fmt: skip
    result = {"results": rows, "methods": dict.fromkeys(speedups, {}), "sdpa_backend": "stubbed",
              "correctness_check": {"passed": failed != "bf16"},
              "environment": {"device": "cpu"},
              "model": {"name": "m", "layers": 2, "weights": "random"}}  # fmt: skip
    e2e_report.plot(result, tmp_path / "e2e.png")
    (panel,) = [p for p in panels if p["ylabel"] == "speed-up over sdpa"]
    passed = [label for label, s in speedups.items() if s is not None]
    assert list(panel["series"]) == [*passed, "bound (attention free)"]


def test_summary_line_gives_the_best_and_the_medians():
    entry = {"speedup": 1.5, "mean_density": 0.25, "fallback_per_layer": [None, "cost"],
             "graphs_captured": 1, "ttft_s": 0.010, "median_ttft_s": 0.012,
             "paired_sdpa_median_ttft_s": 0.015, "logits_rel_err": 0.7363,
             "logits_kl": 0.5959, "top1_match": False}  # fmt: skip
    line = e2e_report.summary(4096, 0.015, "flexprefill", entry)
    assert "flexprefill 10.0 ms" in line and "1 dense-fallback layers" in line
    # a fast plan whose answer drifted says so on the line a user reads
    assert "logits 0.74 from sdpa's, KL 0.6 nats, another top token" in line
    assert line.endswith("speed-up 1.50x (of the medians: 1.25x)")


def test_correctness_check_runs_the_kernel_not_sdpa(monkeypatch):
    """The check's full-density layout must go through attnsieve's attention: with the cost model
    on (as on a GPU, where the backend is Triton) every layer of it would run SDPA, and the check
    would compare SDPA with itself (rel err exactly 0)."""
    import torch

    from attnsieve.integrations import handle as handle_module
    from attnsieve.integrations import transformers as hf

    # make the cost model apply on CPU, as it does on the Triton backend
    monkeypatch.setattr(handle_module, "resolve_backend", lambda backend, query: "triton")
    monkeypatch.setattr(e2e_timing, "CHECK_LENGTH", 256)

    def forward(model, ids):
        with torch.no_grad():
            return 0.0, model(input_ids=ids).logits[0, -1].float(), 0.0

    monkeypatch.setattr(e2e_timing, "_forward", forward)
    model = _tiny_llama()
    seen = []
    attention = hf.attention

    def counted(*args, **kwargs):
        seen.append(1)
        return attention(*args, **kwargs)

    monkeypatch.setattr(hf, "attention", counted)
    check = e2e_timing.correctness_check(model, torch.device("cpu"))
    assert seen, "no layer ran attnsieve's attention"
    assert check["dense_fallback_layers"] == 0 and check["passed"]
    assert check["rel_err"] < e2e_timing.CHECK_REL_ERR


def test_decode_graph_reservation_covers_the_timed_steps(tiny_probe_dir, monkeypatch):
    """Where decode steps replay a CUDA graph, the pages of every timed step are reserved before
    the warm-up captures it: a graph valid for fewer steps than are timed would make the timed
    call reserve and capture again, inside the timing. (CPU stand-in: graph_handle is forced.)"""
    import torch
    from transformers import AutoModelForCausalLM

    from attnsieve.integrations import AttentionConfig
    from attnsieve.integrations.transformers import handle_of

    model = AutoModelForCausalLM.from_pretrained(tiny_probe_dir).eval()
    monkeypatch.setattr(e2e_decode, "WARMUP_STEPS", 2)  # one by hand (the check), one in decode
    monkeypatch.setattr(
        e2e_decode,
        "graph_handle",
        lambda m, cache: handle_of(m) if hasattr(cache, "cache") else None,
    )
    reserved = []
    decode = e2e_decode.decode

    def spy(model, token, cache, steps):
        reserved.append((steps, cache.cache.reserved_tokens()))
        return decode(model, token, cache, steps)

    monkeypatch.setattr(e2e_decode, "decode", spy)
    ids = torch.randint(0, 200, (2, 100), generator=torch.Generator().manual_seed(0))
    config = AttentionConfig(prefill="dense", paged_cache=True)
    e2e_decode.time_decode(model, ids, 40, config)
    (warm, warm_reserved), (timed, timed_reserved) = reserved
    assert warm == 1 and timed == 40
    assert warm_reserved >= warm + timed and timed_reserved >= timed


def test_decode_speed_ups_need_the_dense_configs_first_step_to_match_sdpa(
    tiny_probe_dir, tmp_path, monkeypatch
):
    """Decode rows reported speed-ups with no check of what the steps computed: a broken paged
    cache or decode kernel would have had one. The dense config's first decode step must give
    SDPA's logits; every row records its own error against them."""
    time_decode = e2e_decode.time_decode

    def broken_dense(model, ids, steps, config, graphs=True):
        cell = time_decode(model, ids, steps, config, graphs)
        if config is not None and not config.needs_paged_cache:
            cell["first_step_logits"] = torch.zeros_like(cell["first_step_logits"])
        return cell

    monkeypatch.setattr(e2e_decode, "WARMUP_STEPS", 1)
    assert cli.main(_argv(tiny_probe_dir, tmp_path / "ok")) == 0
    rows = json.loads(next((tmp_path / "ok").glob("*.json")).read_text())["results"]
    assert all(r["check"] is True and r["vs_sdpa"] is not None for r in rows)
    assert max(r["first_step_rel_err"] for r in rows if r["label"] == "dense") < 1e-5
    monkeypatch.setattr(e2e_decode, "time_decode", broken_dense)
    assert cli.main(_argv(tiny_probe_dir, tmp_path / "broken")) == 1
    rows = json.loads(next((tmp_path / "broken").glob("*.json")).read_text())["results"]
    assert all(r["check"] is False and r["vs_sdpa"] is None for r in rows)


def test_decode_kv_memory_counts_reserved_pages_apart(tiny_probe_dir, monkeypatch):
    """kv_mib counts the pages that hold tokens; the pages a CUDA-graph capture reserved ahead
    (256 tokens a head, simulated here on the CPU, where steps run eagerly) are kv_reserved_mib,
    and the pools, free pages included, kv_pool_mib."""
    import math

    import torch
    from transformers import AutoModelForCausalLM

    from attnsieve.integrations import AttentionConfig
    from attnsieve.integrations.decode_graphs import RESERVE_STEPS

    model = AutoModelForCausalLM.from_pretrained(tiny_probe_dir).eval()
    monkeypatch.setattr(e2e_decode, "WARMUP_STEPS", 1)
    ids = torch.randint(0, 200, (2, 100), generator=torch.Generator().manual_seed(0))
    config = AttentionConfig(prefill="dense", paged_cache=True)
    eager = e2e_decode.time_decode(model, ids, 3, config)
    assert eager["kv_reserved_mib"] == 0 and eager["kv_pool_mib"] >= eager["kv_mib"] > 0
    decode = e2e_decode.decode

    def capturing(model, token, cache, steps):  # as decode_graphs does before its capture
        cache.cache.reserve(max(steps, RESERVE_STEPS))
        return decode(model, token, cache, steps)

    monkeypatch.setattr(e2e_decode, "decode", capturing)
    row = e2e_decode.time_decode(model, ids, 3, config)
    assert row["kv_mib"] == eager["kv_mib"]  # the same tokens held
    # 100 + 1 + 3 tokens a head in ceil(104 / 16) pages; the pages up to 101 + 256 tokens ahead
    held, ahead = math.ceil(104 / 16), math.ceil((101 + RESERVE_STEPS) / 16) - math.ceil(104 / 16)
    assert config.page_size == 16 and row["kv_reserved_mib"] > 0
    assert row["kv_reserved_mib"] / row["kv_mib"] == pytest.approx(ahead / held)
    assert row["kv_pool_mib"] >= row["kv_mib"] + row["kv_reserved_mib"]
    monkeypatch.setattr(e2e_decode, "decode", decode)
    sdpa = e2e_decode.time_decode(model, ids, 3, None)
    assert sdpa["kv_reserved_mib"] == 0 and sdpa["kv_pool_mib"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "nope"], "error: --methods: nope: unknown prefill method"),
        (["--precision", "foo"], "--precision"),
        (["--lengths", "0"], "lengths: "),
        (["--model", "/nonexistent/model"], "/nonexistent/model"),
        (["--rope-scale", "2"], "--rope-scale: applies to a loaded model, not the random one"),
    ],
)
def test_arguments_are_checked_before_the_gpu(argv, message, capsys, monkeypatch):
    """A bad argument is reported as itself, not hidden behind 'needs a CUDA GPU' on a machine
    without one (nor found only after a GPU run loaded the weights)."""
    monkeypatch.setattr(e2e, "require_cuda", lambda: pytest.fail("checked after the GPU"))
    assert cli.main(["bench", "e2e", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnsieve bench e2e: error: ") and message in err and "CUDA" not in err


@pytest.mark.parametrize(
    "argv",
    [["--config", "{f}"], ["--methods", "{f}"], ["--methods", "{f}", "--decode-steps", "2"]],
)
def test_a_config_that_does_not_fit_the_model_is_refused_before_it_loads(
    argv, tmp_path, capsys, monkeypatch
):
    """A layer past the model's last was found once the model had loaded (and, with decode
    steps, after the first configuration had run), naming no option."""
    far = tmp_path / "far.json"
    far.write_text('{"layers": {"99": {"prefill": "streaming"}}}')
    monkeypatch.setattr(e2e, "_load", lambda *a: pytest.fail("loaded"))
    monkeypatch.setattr(e2e, "require_cuda", lambda: pytest.fail("checked after the GPU"))
    argv = [x.format(f=far) for x in argv]
    out = ["--out", str(tmp_path / "out")] + ["--device", "cpu"] * ("--decode-steps" in argv)
    assert cli.main(["bench", "e2e", "--model", "probe", *argv, *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    option = argv[0]
    assert err == [f"attnsieve bench e2e: error: {option}: far: layers[99]: the model has 6 "
                   "layers (0..5)"]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "dense, streaming,dense"], "--methods: ['dense'] given twice"),
        (["--methods", "{a},{b}"], "--methods: two entries would be labelled ['cd']"),
        (["--methods", "streaming,{s}"], "--methods: two entries would be labelled ['streaming']"),
        (["--methods", "streaming", "--config", "{a}"], "--methods: not used with --config"),
        # a planner's name was timed as if it were a config file
        (["--config", "streaming"], "--config: expected an AttentionConfig JSON file"),
        # a file's own errors began with its path, naming no option
        (["--config", "{a}x.json"], "--config: "),
        (["--methods", "{a}x.json"], "--methods: "),
        (["--precision", "bf16,bf16"], "--precision: ['bf16'] given twice"),
    ],
)
def test_time_to_first_token_refuses_a_method_timed_twice_or_dropped(
    argv, message, tmp_path, capsys, monkeypatch
):
    """Two entries of one label were timed and one kept; --methods beside --config was ignored."""
    a, b = tmp_path / "a" / "cd.json", tmp_path / "b" / "cd.json"
    for path in (a, b):
        path.parent.mkdir()
        path.write_text('{"prefill": "streaming"}')
    (tmp_path / "a" / "streaming.json").write_text('{"prefill": "dense"}')
    argv = [x.format(a=a, b=b, s=tmp_path / "a" / "streaming.json") for x in argv]
    monkeypatch.setattr(e2e, "require_cuda", lambda: pytest.fail("checked after the GPU"))
    assert cli.main(["bench", "e2e", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"attnsieve bench e2e: error: {message}")


def test_methods_default_unless_config_is_given(tmp_path):
    """--methods left out times flexprefill, or --config's file alone; the recorded command
    spells what ran."""
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    args = parser.parse_args([])
    e2e._mode_options(args, decode=False)
    assert [label for label, _ in e2e._methods(args)] == ["flexprefill"]
    assert "--methods flexprefill" in e2e_report.command(args)
    path = tmp_path / "cd.json"
    path.write_text('{"prefill": "streaming"}')
    args = parser.parse_args(["--config", str(path)])
    e2e._mode_options(args, decode=False)
    assert [(label, c.prefill) for label, c in e2e._methods(args)] == [("cd", "streaming")]
    assert "--methods" not in e2e_report.command(args)


def test_a_length_or_batch_given_twice_runs_once():
    """A duplicate was timed twice; in decode mode the second batch's rows divided by the
    first's SDPA time (a vs_sdpa of 18 for SDPA itself)."""
    assert e2e._parse_lengths(["8k,8192", "16k"]) == [8192, 16384]
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    args = parser.parse_args(["--model", "probe", "--decode-steps", "2", "--batch", "1,1,2"])
    e2e._mode_options(args, decode=True)  # as main runs it first: --methods' default
    assert e2e_decode.plan(args)[0] == [1, 2]


def _stub_check(monkeypatch, failing):
    """e2e's correctness checks, one per prefill precision, those in ``failing`` failed."""
    checked = []

    def check(model, device, precision="bf16"):
        checked.append(precision)
        return {"rel_err": 0.0, "tolerance": 0.05, "dense_fallback_layers": 0,
                "graph_replay": False, "passed": precision not in failing}  # fmt: skip

    monkeypatch.setattr(e2e, "correctness_check", check)
    return checked


def _stub_ttft(monkeypatch):
    """Time to first token on the CPU: every method twice as fast as SDPA, the GPU's parts
    stubbed."""
    logits = torch.zeros(1, 8)
    monkeypatch.setattr(e2e, "require_cuda", lambda: torch.device("cpu"))
    monkeypatch.setattr(
        e2e, "time_alternating", lambda *a, **k: ([(2.0, logits, 0.1)], [(1.0, logits, 0.1)])
    )
    monkeypatch.setattr(e2e, "time_attention_free", lambda *a, **k: 0.5)
    monkeypatch.setattr(e2e, "sdpa_backend", lambda model, device: "stubbed")


def _streaming_run(model_dir, out, precision: str) -> int:
    """`bench e2e` of streaming at 512 tokens in ``precision``: its exit status."""
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    argv = ["--model", str(model_dir), "--lengths", "512", "--methods", "streaming",
            "--precision", precision, "--out", str(out)]  # fmt: skip
    return e2e.main(parser.parse_args(argv))


def test_each_precision_is_gated_by_its_own_check(tiny_probe_dir, tmp_path, monkeypatch):
    """INT8·FP8 methods' speed-ups were gated by the bf16 kernel's check alone: a broken INT8
    kernel would still have reported one."""
    _stub_ttft(monkeypatch)
    checked = _stub_check(monkeypatch, failing=("int8-fp8",))
    assert _streaming_run(tiny_probe_dir, tmp_path, "bf16,int8-fp8") == 1  # a check failed
    assert checked == ["bf16", "int8-fp8"]
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    speedups = {label: m["speedup"] for label, m in result["results"][0]["methods"].items()}
    assert speedups == {"streaming": 2.0, "streaming+int8-fp8": None}
    assert result["correctness_check_int8_fp8"]["passed"] is False


@pytest.mark.parametrize("cut", [False, True])
def test_time_to_first_token_json_keeps_the_lengths_a_run_finished(
    tiny_probe_dir, tmp_path, monkeypatch, capsys, cut
):
    """The JSON is written after every length: a run cut short at its second length (as a timeout
    would, here an interrupt from the timer) keeps the first, marked incomplete; a whole run is
    marked complete. The progress bar counts every forward. The GPU's parts are stubbed (CPU)."""
    timed = []

    def alternating(model, ids, repeats, stock, tick):
        if cut and timed:
            raise KeyboardInterrupt
        timed.append(ids.shape[1])
        for _ in range(2 * (repeats + 1)):  # stock and patched, a warm-up of each
            tick(stock)
        logits = torch.zeros(1, 8)
        return [(2.0, logits, 0.1)], [(1.0, logits, 0.1)]

    def attention_free(model, ids, repeats, tick):
        for _ in range(repeats + 1):
            tick("attention_free")
        return 0.5

    _stub_check(monkeypatch, failing=())
    monkeypatch.setattr(e2e, "require_cuda", lambda: torch.device("cpu"))
    monkeypatch.setattr(e2e, "time_alternating", alternating)
    monkeypatch.setattr(e2e, "time_attention_free", attention_free)
    monkeypatch.setattr(e2e, "sdpa_backend", lambda model, device: "stubbed")
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    argv = ["--model", str(tiny_probe_dir), "--lengths", "512,1024", "--methods", "streaming",
            "--out", str(tmp_path)]  # fmt: skip
    stem = tmp_path / f"e2e_{tiny_probe_dir.name}_streaming"
    stem.with_suffix(".png").write_bytes(b"an earlier run's plot")
    if cut:
        with pytest.raises(KeyboardInterrupt):
            e2e.main(parser.parse_args(argv))
    else:
        assert e2e.main(parser.parse_args(argv)) == 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert result["complete"] is not cut
    assert [r["length"] for r in result["results"]] == ([512] if cut else [512, 1024])
    assert all(r["methods"]["streaming"]["speedup"] == 2.0 for r in result["results"])
    assert stem.with_suffix(".png").exists() is not cut
    assert not list(tmp_path.glob("*.tmp"))
    # 2 lengths x (stock + patched + attention-free) x (2 repeats + a warm-up); cut after 9
    assert f"| {9 if cut else 18}/18 " in capsys.readouterr().err


@pytest.mark.parametrize("decode", [False, True])
def test_a_length_too_short_for_the_prompt_is_named_before_the_weights_load(
    tiny_probe_dir, tmp_path, capsys, monkeypatch, decode
):
    """A loaded model's prompts are niah_single text (368 tokens at the least with the probe's
    tokenizer): a shorter --lengths was a LengthTooShortError traceback after the weights loaded
    and the correctness check ran."""
    monkeypatch.setattr(e2e, "_load", lambda *a: pytest.fail("checked after the weights load"))
    argv = ["bench", "e2e", "--model", str(tiny_probe_dir), "--lengths", "1024,256",
            "--out", str(tmp_path)]  # fmt: skip
    if decode:
        argv += ["--decode-steps", "2", "--device", "cpu"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnsieve bench e2e: error: --lengths: length=256")
    assert "niah_single text" in err[0]


def test_decode_speed_json_keeps_the_cells_a_run_finished(tiny_probe_dir, tmp_path, monkeypatch):
    """Decode speed writes its JSON after every cell: cut short at the third (an interrupt, as a
    timeout would), it keeps the first two, marked incomplete."""
    time_decode, timed = e2e_decode.time_decode, []

    def each_cell(*args, **kwargs):
        if len(timed) == 2:
            raise KeyboardInterrupt
        timed.append(args[3])
        return time_decode(*args, **kwargs)

    monkeypatch.setattr(e2e_decode, "WARMUP_STEPS", 1)
    monkeypatch.setattr(e2e_decode, "time_decode", each_cell)
    with pytest.raises(KeyboardInterrupt):
        cli.main(_argv(tiny_probe_dir, tmp_path))
    result = _decode_result(tmp_path)
    assert result["complete"] is False
    assert [r["label"] for r in result["results"]] == ["sdpa", "dense"]
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.tmp"))


def test_default_lengths_cut_by_the_decode_steps_are_checked_before_the_weights_load(
    tiny_probe_dir, tmp_path, capsys, monkeypatch
):
    """Without --lengths, the default is cut to the positions --decode-steps leaves (the probe's
    32768 less 32500 steps and the warm-up): too short for the prompt, an error naming
    --decode-steps before the weights load (it named neither option, after loading)."""
    monkeypatch.setattr(e2e, "_load", lambda *a: pytest.fail("checked after the weights load"))
    argv = ["bench", "e2e", "--model", str(tiny_probe_dir), "--decode-steps", "32500",
            "--device", "cpu", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("attnsieve bench e2e: error: --decode-steps: length=")


def test_only_the_precisions_the_methods_run_in_are_checked(
    tiny_probe_dir, tmp_path, monkeypatch, capsys
):
    """--precision int8-fp8 alone still ran the bf16 check, which gates no method: where it failed,
    the command exited 1 with every speed-up reported and no line saying what failed. Only the
    methods' precisions are checked now, and each check's line says whether it passed."""
    _stub_ttft(monkeypatch)
    checked = _stub_check(monkeypatch, failing=("bf16",))
    assert _streaming_run(tiny_probe_dir, tmp_path, "int8-fp8") == 0
    assert checked == ["int8-fp8"]
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    assert result["correctness_check"] is None and result["correctness_check_int8_fp8"]["passed"]
    assert result["results"][0]["methods"]["streaming+int8-fp8"]["speedup"] == 2.0
    assert "check (int8-fp8 full-budget layout vs sdpa, 4096 tokens): " in capsys.readouterr().out
    _stub_check(monkeypatch, failing=("int8-fp8",))
    assert _streaming_run(tiny_probe_dir, tmp_path, "int8-fp8") == 1
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("check (")]
    assert line.endswith(": FAILED, no speed-up for int8-fp8 methods")


def test_a_label_with_a_dot_names_its_file_whole(tiny_probe_dir, tmp_path, monkeypatch):
    """A config file gamma0.9.json is labelled gamma0.9: its results went to e2e_MODEL_gamma0.json
    (Path.with_suffix took ".9" for a suffix), where gamma0.5.json's went too."""
    _stub_ttft(monkeypatch)
    _stub_check(monkeypatch, failing=())
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    for gamma in ("0.9", "0.5"):
        config = tmp_path / f"gamma{gamma}.json"
        config.write_text('{"prefill": "streaming"}')
        argv = ["--model", str(tiny_probe_dir), "--lengths", "512", "--methods", str(config),
                "--out", str(tmp_path / "out")]  # fmt: skip
        assert e2e.main(parser.parse_args(argv)) == 0
    stem = f"e2e_{tiny_probe_dir.name}_gamma"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{stem}0.5.json",
        f"{stem}0.5.png",
        f"{stem}0.9.json",
        f"{stem}0.9.png",
    ]


def _stub_decode_cells(monkeypatch):
    """Decode speed's cells stubbed: every config and SDPA decode alike, with SDPA's logits."""

    def cell(model, ids, steps, config, graphs=True):
        return {"config": None if config is None else config.to_dict(),
                "prompt_tokens": ids.shape[1], "seconds": 1.0, "ms_per_step": 1e3 / steps,
                "tokens_per_s": float(ids.shape[0] * steps), "kv_mib": 1.0,
                "kv_reserved_mib": 0.0, "kv_pool_mib": None, "graph_replayed": False,
                "first_step_logits": torch.zeros(ids.shape[0], 8)}  # fmt: skip

    monkeypatch.setattr(e2e_decode, "time_decode", cell)


def test_decode_runs_of_other_configs_keep_files_of_their_own(
    tiny_probe_dir, tmp_path, monkeypatch
):
    """Decode speed wrote e2e_decode_MODEL.json whatever ran: a second run of other configs in the
    same --out overwrote the first. Its files are named by the configs' labels now, as time to
    first token's are (and by --no-graphs); the JSON records the transformers that ran, as time
    to first token's does."""
    import transformers

    _stub_decode_cells(monkeypatch)
    runs = {"dense": ["--kv", "none"], "dense+streaming@0.25": ["--kv", "streaming"],
            "dense+streaming@0.25_nographs": ["--kv", "streaming", "--no-graphs"]}  # fmt: skip
    for extra in runs.values():
        assert cli.main(_argv(tiny_probe_dir, tmp_path, "--decode", "none", *extra)) == 0
    stem = f"e2e_decode_{tiny_probe_dir.name}_"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{stem}{labels}{ext}" for labels in runs for ext in (".json", ".png")
    )
    result = json.loads((tmp_path / f"{stem}dense+streaming@0.25.json").read_text())
    assert {r["label"] for r in result["results"]} == {"sdpa", "dense+streaming@0.25"}
    assert result["environment"]["transformers"] == transformers.__version__
