"""Probe model: byte tokenizer, config, checkpoint round trip, training data, train.py smoke run."""

import json
import random

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM  # noqa: E402

from attnsieve.eval.probe import probe_config, weights_dir  # noqa: E402
from attnsieve.eval.probe import train as probe_train  # noqa: E402
from attnsieve.eval.probe.tokenizer import ByteTokenizer  # noqa: E402


def test_byte_tokenizer_round_trip(tmp_path):
    tok = ByteTokenizer()
    text = "Needle 1234567 — naïve café ✓\n\tend"
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id and ids[1:] == list(text.encode("utf-8"))
    assert tok.encode(text, add_special_tokens=False) == ids[1:]
    assert tok.decode(ids) == text
    assert tok.decode([*ids, tok.eos_token_id], skip_special_tokens=False) == f"<s>{text}</s>"
    assert tok.decode([0xE2, 0x80]) == "\ufffd"  # a cut UTF-8 sequence decodes, replaced
    with pytest.raises(ValueError, match="ids must be in"):
        tok.decode([300])
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(b"bytes")
    tok.save_pretrained(tmp_path)
    assert ByteTokenizer.from_pretrained(tmp_path).encode(text) == ids
    with pytest.raises(FileNotFoundError, match="byte_tokenizer.json"):
        ByteTokenizer.from_pretrained(tmp_path / "missing")


def test_probe_config_shape_and_size():
    config = probe_config()
    assert config.head_dim == 64
    assert config.num_attention_heads % config.num_key_value_heads == 0
    assert config.num_attention_heads > config.num_key_value_heads  # GQA
    assert config.max_position_embeddings >= 16384
    assert config.vocab_size >= ByteTokenizer.vocab_size
    model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) * 2 <= 32 * 2**20  # bf16 weights <= 32 MB


def test_curriculum_and_learning_rate():
    ladder = probe_train.length_ladder(16384)
    assert ladder == [1024, 2048, 4096, 8192, 16384]
    assert probe_train.length_ladder(768) == [768]
    rng = random.Random(0)
    assert {probe_train.pick_length(ladder, 0.0, rng) for _ in range(50)} == {1024}
    late = {probe_train.pick_length(ladder, 0.6, rng) for _ in range(100)}
    assert late == {4096, 8192, 16384}
    args = probe_train.parse_args(["--out", "x", "--lr", "1e-3", "--warmup-steps", "10"])
    state = probe_train.State(step=0)
    assert probe_train.lr_at(state, 0.0, args) == pytest.approx(1e-4)
    state.step = 100
    assert probe_train.lr_at(state, 0.0, args) == pytest.approx(1e-3)
    assert probe_train.lr_at(state, 1.0, args) == pytest.approx(1e-3 * args.min_lr_ratio)


def test_batches_supervise_answers_after_the_prompt():
    class Progress:
        value = 0.0

    data = probe_train.Batches(0, [2048], 8192, [], Progress())
    ids, kinds = next(iter(data))
    assert ids.shape == kinds.shape == (4, 2048)
    tok = ByteTokenizer()
    for row_ids, row_kinds in zip(ids.tolist(), kinds.tolist(), strict=True):
        answer = [t for t, k in zip(row_ids, row_kinds, strict=True) if k == probe_train.ANSWER]
        assert answer[-1] == tok.eos_token_id
        first = row_kinds.index(probe_train.ANSWER)
        assert set(row_kinds[1:first]) == {probe_train.CONTEXT}
        assert row_ids[0] == tok.bos_token_id and row_kinds[0] == probe_train.IGNORE
        prompt, target = tok.decode(row_ids[:first]), tok.decode(answer[:-1])
        assert target.startswith(" ") and target.endswith(".")
        assert all(part.strip() in prompt for part in target.strip(" .").split(", "))


def test_checkpoint_round_trip(tmp_path):
    args = probe_train.parse_args(["--out", str(tmp_path), "--device", "cpu"])
    model = AutoModelForCausalLM.from_config(probe_config())
    optimizer = probe_train.make_optimizer(model, args)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    state = probe_train.State(step=7, train_seconds=12.5, tokens=1000, sessions=1)
    probe_train.save_checkpoint(tmp_path / "ckpt", model, optimizer, state)
    files = list((tmp_path / "ckpt").glob("ckpt-*.safetensors"))
    assert len(files) >= 2 and all(f.stat().st_size < 16 * 2**20 for f in files)
    fresh = AutoModelForCausalLM.from_config(probe_config())
    fresh_optimizer = probe_train.make_optimizer(fresh, args)
    assert probe_train.load_checkpoint(tmp_path / "ckpt", fresh, fresh_optimizer) == state
    for (name, a), b in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b), name
        sa, sb = optimizer.state[a], fresh_optimizer.state[b]
        assert float(sb["step"]) == float(sa["step"]) == 1.0
        torch.testing.assert_close(sb["exp_avg"], sa["exp_avg"], rtol=1e-2, atol=1e-6)


def test_train_smoke_resume_and_export(tmp_path):
    common = ["--out", str(tmp_path), "--device", "cpu", "--max-steps", "2", "--seq-len", "1024"]
    common += ["--batch-tokens", "1024", "--eval-lengths", "1024", "--eval-samples", "1"]
    common += ["--eval-tasks", "passkey,niah_single"]
    assert probe_train.main([*common, "--session-minutes", "0"]) == 0  # one step, then stop
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["state"]["step"] == 1
    assert not (tmp_path / "weights").exists()
    assert probe_train.main(common) == 2  # refuses to overwrite a checkpoint without --resume
    assert probe_train.main([*common, "--resume"]) == 0
    log = (tmp_path / "train.log").read_text()
    assert "session 2 from step 1" in log and "step      2 |" in log and "tok/s" in log
    assert not (tmp_path / "checkpoint").exists()
    weights = weights_dir(tmp_path / "weights")  # verifies SHA256SUMS
    model = AutoModelForCausalLM.from_pretrained(weights)
    assert model.config.num_attention_heads == probe_config().num_attention_heads
    assert (weights / "model.safetensors").stat().st_size <= 32 * 2**20
    assert ByteTokenizer.from_pretrained(weights).decode([104, 105]) == "hi"
    results = json.loads((weights / "niah_eval.json").read_text())
    assert set(results["accuracy"]["1024"]) == {"passkey", "niah_single"}
    (weights / "model.safetensors").write_bytes(b"corrupted")
    with pytest.raises(ValueError, match="sha256"):
        weights_dir(weights)
