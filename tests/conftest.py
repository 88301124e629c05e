import os

# The Triton interpreter must be chosen before triton is first imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
# No test may reach the Hub: a name that is not a local path fails at once instead of retrying a
# download for minutes where the network is closed (CI, these machines).
os.environ["HF_HUB_OFFLINE"] = "1"

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# xdist workers share the cores: each with torch's default of one thread per core, the threads
# outnumber the cores and the many small ops of a decode loop or a DP run several times slower
torch.set_num_threads(
    max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def nan_empty(monkeypatch):
    """torch.empty(_like) give NaN-filled float memory: any output a kernel skips fails the check
    (flash-linear-attention's trick); kernel test modules use it for every test."""
    empty, empty_like = torch.empty, torch.empty_like

    def nan(t):
        return t.fill_(math.nan) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan(empty_like(*a, **k)))


@pytest.fixture(scope="session")
def tiny_probe_dir(tmp_path_factory):
    """A 2-layer random probe-architecture model (GQA 4/2, head_dim 64) with its byte tokenizer,
    saved as a transformers folder: the CPU stand-in for a real model in CLI tests."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    import attnsieve.eval.probe as probe
    from attnsieve.eval.probe.tokenizer import ByteTokenizer

    config = probe.probe_config()
    config.num_hidden_layers, config.hidden_size, config.intermediate_size = 2, 128, 256
    config.num_attention_heads, config.num_key_value_heads = 4, 2  # head_dim stays 64, GQA g=2
    path = tmp_path_factory.mktemp("tiny_probe")
    with torch.random.fork_rng():  # the same weights whichever test builds the fixture first
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    # the embedding's padding rows (264 rows, 259 ids) must not win a greedy step, as in the
    # trained probe: the tokenizer cannot decode them
    with torch.no_grad():
        model.get_output_embeddings().weight[ByteTokenizer.vocab_size :] = 0
    model.save_pretrained(path)
    ByteTokenizer().save_pretrained(path)
    return path
