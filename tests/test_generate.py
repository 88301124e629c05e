"""`attnsieve.integrations.generate` on a tiny random model (CPU)."""

import pytest
import torch

from attnsieve.integrations.generate import decode, eos_token_ids, generate
from attnsieve.integrations.handle import PatchStats
from tests.test_integration_transformers import build


@pytest.fixture(scope="module")
def model():
    return build("llama")


def test_a_tuple_of_eos_ids_ends_generation(model):
    """transformers takes the generation config's EOS as a tuple too; kept whole, the tuple was
    one id that no token equals, and generation ran past every EOS."""
    ids = torch.randint(3, 128, (1, 9), generator=torch.Generator().manual_seed(0))
    first = generate(model, ids, 1, 4, set(), PatchStats(2))[0][0]
    model.generation_config.eos_token_id = (first, 127)
    try:
        eos = eos_token_ids(model, None)
        assert eos == {first, 127}
        assert generate(model, ids, 5, 4, eos, PatchStats(2))[0] == [first]
    finally:
        model.generation_config.eos_token_id = 2


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"input_ids": [[3, 4, 5]]}, TypeError, "^input_ids: expected an int64 or int32 tensor"),
        ({"input_ids": torch.ones(1, 3)}, TypeError, r"^input_ids: .*got torch\.float32"),
        ({"context_length": True}, ValueError, "^context_length: expected 1 to 3 tokens"),
    ],
    ids=["list", "float", "bool-context"],
)
def test_generate_refuses_bad_arguments_by_name(model, change, error, match):
    """A float or list prompt failed inside the model (an embedding RuntimeError, an
    AttributeError); context_length=True ran as 1."""
    kwargs = {"input_ids": torch.tensor([[3, 4, 5]]), **change}
    with pytest.raises(error, match=match):
        generate(
            model, **kwargs, max_new_tokens=2, chunk_size=2, eos_ids=set(), stats=PatchStats(2)
        )


@pytest.mark.parametrize("steps", [-1, 2.0, True])
def test_decode_refuses_a_bad_number_of_steps(model, steps):
    """-1 ran no step, silently; 2.0 failed in range() without a name."""
    with pytest.raises(ValueError, match="^steps: expected an int >= 0"):
        decode(model, torch.tensor([3]), None, steps)


@pytest.mark.parametrize(
    ("token", "error", "match"),
    [
        (
            torch.tensor([[3]]),
            ValueError,
            r"^token: expected \(B,\), one token per row, got \(1, 1\)",
        ),
        (torch.tensor([3.0]), TypeError, r"^token: .*got torch\.float32"),
        ([3], TypeError, "^token: .*got list"),
    ],
    ids=["2d", "float", "list"],
)
def test_decode_refuses_a_bad_token_by_name(model, token, error, match):
    """A (B, 1) token ran and returned (1, 1) tokens, silently; a float or list token failed
    inside the model (an embedding RuntimeError, an AttributeError)."""
    with pytest.raises(error, match=match):
        decode(model, token, None, 2)


def test_generate_and_decode_record_no_autograd(model):
    """Every forward runs under inference mode: with autograd on, a 4K prompt of SmolLM2 kept
    each layer's attention for a backward pass and took 24 GB on the CPU (the decorator had
    moved from `generate` to the helper written above it)."""
    grad_enabled = []
    hook = model.register_forward_pre_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    try:
        ids = torch.randint(3, 128, (1, 9), generator=torch.Generator().manual_seed(0))
        tokens, *_ = generate(model, ids, 2, 4, set(), PatchStats(2))
        decode(model, torch.tensor(tokens[-1:]), None, 2)
    finally:
        hook.remove()
    assert len(grad_enabled) >= 4 and not any(grad_enabled)
