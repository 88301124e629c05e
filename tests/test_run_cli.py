"""`attnsieve run` end to end on a tiny saved Llama and an offline word-level tokenizer (CPU)."""

import argparse
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from attnsieve import run  # noqa: E402
from attnsieve.integrations import AttentionConfig  # noqa: E402
from attnsieve.methods.kv import RazorAttention  # noqa: E402

WORDS = [f"w{i}" for i in range(124)]
BLOCKS = {"block_q": 16, "block_k": 16}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    vocab = {
        "[PAD]": 0,
        "[BOS]": 1,
        "[EOS]": 2,
        "[UNK]": 3,
        **{w: i + 4 for i, w in enumerate(WORDS)},
    }
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    backend.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def cli(model_dir, tmp_path, config, *extra):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(" ".join(WORDS[(7 * i) % len(WORDS)] for i in range(40)))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    argv = ["--model", str(model_dir), "--prompt-file", str(prompt), "--config", str(config_path)]
    return parser.parse_args(argv + ["--dtype", "fp32", "--device", "cpu", *extra]), prompt


def expected_text(model_dir, prompt, new_tokens):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer(prompt.read_text(), return_tensors="pt").input_ids
    out = model.generate(input_ids=ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_run_chunked_prefill_matches_generate(model_dir, tmp_path, capsys):
    full_window = {"sink_tokens": 0, "window_tokens": 512, **BLOCKS}
    config = {"prefill": {"method": "streaming", **full_window}, "min_prefill_length": 8}
    # 40 tokens in chunks of 16, 16, 8: every chunk after the first attends to the cache (M > N)
    args, prompt = cli(model_dir, tmp_path, config, "--max-new-tokens", "6", "--chunk-size", "16")
    assert run.main(args) == 0
    out = capsys.readouterr()
    text, summary = out.out.split("\n---\n")
    assert text.strip() == expected_text(model_dir, prompt, 6).strip()
    assert (
        "prompt tokens: 40" in summary
        and "time to first token:" in summary
        and "decode:" in summary
    )
    assert "mean density per layer: 1.000 1.000" in summary
    assert "prefill" in out.err  # the progress bar of a multi-chunk prompt


def test_run_reports_each_layer_s_fallback_over_the_whole_chunked_prompt(
    model_dir, tmp_path, capsys
):
    """Chunks of 16, 16, 8 with min_prefill_length 16: the last chunk runs dense as "short",
    but layer 1 planned most of the prompt's pairs and layer 0 has no planner. The summary said
    "short" for both (the last chunk's reasons)."""
    window = {"sink_tokens": 0, "window_tokens": 8, **BLOCKS}
    config = {"prefill": {"method": "streaming", **window}, "min_prefill_length": 16,
              "layers": {"0": {"prefill": None}}}  # fmt: skip
    args, _ = cli(model_dir, tmp_path, config, "--max-new-tokens", "1", "--chunk-size", "16")
    assert run.main(args) == 0
    summary = capsys.readouterr().out.split("\n---\n")[1]
    assert "dense fallback (unplanned): layers [0]" in summary
    assert "short" not in summary


def test_run_on_the_paged_cache_matches_generate(model_dir, tmp_path, capsys):
    """--paged-cache: dense decode through attnsieve's paged cache and decode attention gives
    transformers' greedy text and reports the cache it held."""
    args, prompt = cli(model_dir, tmp_path, {"prefill": "dense"}, "--max-new-tokens", "6",
                       "--paged-cache")  # fmt: skip
    assert run.main(args) == 0
    text, summary = capsys.readouterr().out.split("\n---\n")
    assert text.strip() == expected_text(model_dir, prompt, 6).strip()
    assert "KV cache:" in summary and "MiB held" in summary


def test_run_sparse_method_reports_density(model_dir, tmp_path, capsys):
    config = {"prefill": "dense", "min_prefill_length": 16}
    sparse = {"sink_tokens": 0, "window_tokens": 1, **BLOCKS}
    args, _ = cli(
        model_dir,
        tmp_path,
        {**config, "layers": {"1": {"prefill": {"method": "streaming", **sparse}}}},
    )
    args.max_new_tokens = 3
    assert run.main(args) == 0
    out = capsys.readouterr()
    line = next(s for s in out.out.splitlines() if s.startswith("mean density per layer"))
    dense, sparse_density = (float(x) for x in line.split(":")[1].split())
    assert dense == 1.0 and sparse_density < 0.9
    # the config's default is dense; the summary names what the layers ran (it said "dense")
    assert "prefill: dense (1 layer), streaming (1 layer)" in out.out


def test_run_names_one_prefill_method_for_every_layer(model_dir, tmp_path, capsys):
    args, _ = cli(model_dir, tmp_path, {"prefill": "streaming"}, "--max-new-tokens", "1")
    assert run.main(args) == 0
    assert "prefill: streaming\n" in capsys.readouterr().out
    config = AttentionConfig(
        layers={i: {"prefill": [{"method": "streaming"}, "dense"]} for i in (0, 1)}
    )
    assert run.prefill_methods(config, 2) == "per-head dense/streaming"


def test_run_role_flags_replace_the_config_s_per_layer_entries(model_dir, tmp_path, capsys):
    """--decode and --method override the config's role in every layer, not only its top-level
    entry: a calibrated config's per-layer entries (Double Sparsity's channels, per-head planners)
    had kept running under the flag that was meant to replace them."""
    sparse = {"method": "streaming", "sink_tokens": 0, "window_tokens": 1, **BLOCKS}
    no_labels = {"method": "double_sparsity", "ratio": 0.5, "dense_layers": 0}  # fails at decode
    config = {"prefill": "dense", "min_prefill_length": 16,
              "layers": {"0": {"decode": no_labels}, "1": {"prefill": sparse}}}  # fmt: skip
    args, _ = cli(model_dir, tmp_path, config, "--max-new-tokens", "3", "--decode", "quest",
                  "--method", "dense")  # fmt: skip
    assert run.main(args) == 0
    assert "mean density per layer: 1.000 1.000" in capsys.readouterr().out


def test_run_takes_a_kv_entry_file(model_dir, tmp_path, capsys, monkeypatch):
    """--kv razor.json (what `attnsieve calibrate --retrieval-heads` writes): RazorAttention with
    its retrieval heads compresses the prompt on the paged cache and generation runs."""
    entry = tmp_path / "razor.json"
    entry.write_text(json.dumps({"method": "razor", "budget": 12, "retrieval_heads": {"0": [1]}}))
    args, _ = cli(model_dir, tmp_path, {"prefill": "dense"}, "--max-new-tokens", "3", "--kv",
                  str(entry))  # fmt: skip
    kept = []
    compress = RazorAttention.compress
    monkeypatch.setattr(RazorAttention, "compress", lambda self, view: kept.append(
        (self.retrieval_heads, compress(self, view))) or kept[-1][1])  # fmt: skip
    assert run.main(args) == 0
    assert "KV cache:" in capsys.readouterr().out.split("\n---\n")[1]
    assert len(kept) == 2 and all(heads == {0: [1]} for heads, _ in kept)  # both layers
    # layer 0's head 1 keeps everything (the file's list); every other head 12 tokens and a
    # compensation token (a layer the list leaves out has no retrieval head)
    assert all(int(k.count.min()) == 12 and bool((k.extra_weight > 0).any()) for _, k in kept)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    args.kv = str(bad)
    with pytest.raises(ValueError, match="--kv"):
        run.main(args)


def test_run_switches_a_config_files_kv_policy_off_with_none(model_dir, tmp_path, capsys):
    """--kv none / --decode none, as eval takes them: "none" was refused as an unknown policy, so
    nothing switched a config file's policy off."""
    config = {"prefill": "dense", "kv": {"method": "streaming", "budget": 8}, "decode": "quest"}
    args, _ = cli(model_dir, tmp_path, config, "--max-new-tokens", "2")
    assert run.main(args) == 0
    assert "KV cache:" in capsys.readouterr().out  # the paged cache of the file's policy
    args.kv = args.decode = "none"
    assert run.main(args) == 0
    assert "KV cache:" not in capsys.readouterr().out


def test_run_chat_sends_the_prompt_as_a_user_turn(model_dir, tmp_path, capsys):
    """--chat: the greedy answer to the chat template's tokens, not to the bare text; a tokenizer
    without a template is refused by name."""
    args, prompt = cli(model_dir, tmp_path, {"prefill": "dense"}, "--max-new-tokens", "5")
    prompt.write_text(prompt.read_text() + "\n")  # a text file's last newline is not in the turn
    args.chat = True
    with pytest.raises(ValueError, match="^--chat: the model's tokenizer has no chat template"):
        run.main(args)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = "{% for m in messages %}w0 w1 {{ m['content'] }} w2{% endfor %} w3"
    chat_dir = tmp_path / "chat"
    transformers.AutoModelForCausalLM.from_pretrained(model_dir).save_pretrained(chat_dir)
    tokenizer.save_pretrained(chat_dir)
    args.model = str(chat_dir)
    assert run.main(args) == 0
    text = capsys.readouterr().out.split("\n---\n")[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(chat_dir, dtype=torch.float32).eval()
    words = f"w0 w1 {prompt.read_text().rstrip()} w2 w3"
    ids = tokenizer(words, add_special_tokens=False, return_tensors="pt").input_ids
    out = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert text.strip() == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert text.strip() != expected_text(model_dir, prompt, 5).strip()


def test_run_rejects_bad_arguments(model_dir, tmp_path):
    args, _ = cli(model_dir, tmp_path, {"prefill": "dense"}, "--max-new-tokens", "0")
    with pytest.raises(ValueError, match="max-new-tokens"):
        run.main(args)
    args, _ = cli(model_dir, tmp_path, {"prefill": "dense"}, "--method", "nope")
    with pytest.raises(ValueError, match="unknown prefill method"):
        run.main(args)


def test_run_names_the_config_that_does_not_fit_the_model(model_dir, tmp_path, monkeypatch):
    """A layer past the model's last is found from the model's config, before its weights load;
    the message named the config's field (layers[9]), not the option that gave it."""
    monkeypatch.setattr(run, "load_model", lambda *a, **k: pytest.fail("loaded"))
    args, _ = cli(model_dir, tmp_path, {"layers": {"9": {"prefill": "streaming"}}})
    with pytest.raises(ValueError, match=r"^--config: layers\[9\]: the model has 2 layers"):
        run.main(args)
    # the model against the precision, whichever option set it: not the file's
    args, _ = cli(model_dir, tmp_path, {"prefill": "streaming"}, "--precision", "int8-fp8")
    with pytest.raises(ValueError, match=r"^head_dim: the model's is 16, but INT8·FP8 prefill"):
        run.main(args)


def test_run_refuses_an_empty_prompt_and_one_past_the_model_s_positions(model_dir, tmp_path):
    """A prompt file with no text, and a prompt plus the new tokens beyond the model's 256
    positions, are named errors (the latter used to prefill and answer with nothing)."""
    args, prompt = cli(model_dir, tmp_path, {"prefill": "dense"})
    prompt.write_text("  \n")
    with pytest.raises(ValueError, match="--prompt-file: .* holds no text"):
        run.main(args)
    prompt.write_text(" ".join(WORDS[i % len(WORDS)] for i in range(250)))
    args.max_new_tokens = 7
    with pytest.raises(ValueError, match="250 prompt tokens and --max-new-tokens 7 need more"):
        run.main(args)


def test_run_takes_the_prompt_as_text(model_dir, tmp_path, capsys):
    """`--prompt TEXT` beside `--prompt-file`: the same output as the file; an empty text and one
    past the positions are errors naming --prompt; the two together are refused."""
    args, prompt = cli(model_dir, tmp_path, {"prefill": "dense"}, "--max-new-tokens", "4")
    args.prompt, args.prompt_file = prompt.read_text(), None
    assert run.main(args) == 0
    assert capsys.readouterr().out.split("\n---\n")[0].strip() == (
        expected_text(model_dir, prompt, 4).strip()
    )
    args.prompt = " \n"
    with pytest.raises(ValueError, match=r"^--prompt: expected text, got ' \\n'$"):
        run.main(args)
    args.prompt, args.max_new_tokens = " ".join(WORDS[i % len(WORDS)] for i in range(250)), 7
    with pytest.raises(ValueError, match="^--prompt: 250 prompt tokens and --max-new-tokens 7"):
        run.main(args)
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--prompt", "a", "--prompt-file", str(prompt)])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_prompt_past_the_positions_is_refused_before_the_weights_load(
    model_dir, tmp_path, monkeypatch
):
    """The check ran after load_model: SmolLM2's de-quantising bars came before the one error
    line."""
    args, prompt = cli(model_dir, tmp_path, {"prefill": "dense"})
    prompt.write_text(" ".join(WORDS[i % len(WORDS)] for i in range(250)))
    args.max_new_tokens = 7

    def load_model(*a, **k):
        raise AssertionError("the weights loaded before the prompt was checked")

    monkeypatch.setattr(run, "load_model", load_model)
    with pytest.raises(ValueError, match="250 prompt tokens and --max-new-tokens 7 need more"):
        run.main(args)


def test_a_prompt_from_standard_input_or_a_pipe(tmp_path, monkeypatch):
    """`--prompt-file -` reads standard input, and a pipe (as /dev/stdin is) reads as a file: a
    pipe had been called missing ('no such file: /dev/stdin'); a path that cannot be opened is
    named with the reason."""
    import io
    import os
    import threading

    from attnsieve.eval.models import read_prompt_file

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("piped ü\n".encode())))
    assert read_prompt_file("-") == "piped ü\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("from a pipe"))
    writer.start()
    assert read_prompt_file(str(fifo)) == "from a pipe"
    writer.join(timeout=10)
    locked = tmp_path / "locked.txt"
    locked.write_text("x")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(ValueError, match=r"^--prompt-file: cannot read .*locked.txt \(Permission"):
        read_prompt_file(str(locked))
