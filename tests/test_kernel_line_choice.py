"""FlexPrefill's line-choice kernel vs its PyTorch twin (TRITON_INTERPRET=1 on CPU): the same
query-aware heads and the same chosen blocks, in registers and over blocks, per-head gamma,
strided inputs; and the argument checks of `api.choose_lines`."""

import math

import pytest
import torch

from attnsieve import api
from attnsieve.kernels import line_choice, line_choice_reference

pytestmark = pytest.mark.usefixtures("nan_empty")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(b, h_q, kb, seed=0):
    """Lines of eighths (their sums are exact, so both sides find the same cut) with ties, and
    pooled scores."""
    g = torch.Generator().manual_seed(seed)
    vertical = torch.randint(0, 9, (b, h_q, kb), generator=g).float() / 8
    slash = torch.randint(0, 3, (b, h_q, kb), generator=g).float() / 8
    pooled = torch.randn(b, h_q, kb, generator=g) * 2
    return [t.to(DEVICE) for t in (vertical, slash, pooled)]


def _divergence(vertical, pooled):
    """The twin's sqrt(JS(ā, â)) per head, to keep tau away from it."""
    return line_choice_reference.sqrt_js_divergence(pooled.softmax(-1), vertical)


def _check(vertical, slash, pooled, **kw):
    kw = {"gamma": 0.9, "tau": 0.1, "lo": 1, "hi": 10**6, **kw}
    js = _divergence(vertical, pooled)
    assert bool(((js - kw["tau"]).abs() > 1e-4).all()), "a head too near tau to compare"
    got = line_choice.choose_lines(vertical, slash, pooled, **kw)
    want = line_choice_reference.choose_lines(vertical, slash, pooled, **kw)
    assert got[0].dtype == got[1].dtype == torch.bool
    assert got[1].shape == (*vertical.shape[:2], 2, vertical.shape[2])
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert got[2].dtype == torch.float32 and torch.equal(got[2], want[2])
    assert bool(got[1][..., 0].all())
    assert bool((got[2] == torch.where(got[0], got[2], 0.0)).all())  # 0 for every other head
    assert bool((got[2] < 1).all())
    return got


def _taus(js):
    """0, 100 (no head, every head query-aware) and a tau 3e-4 on either side of each head's
    divergence, where no head lies within 1e-4 of it: a divergence off by more flips a head."""
    near = [float(x) + e for x in js.flatten().tolist() for e in (-3e-4, 3e-4)]
    return [0.0, 100.0] + [t for t in near if bool(((js - t).abs() > 1e-4).all())][:6]


@pytest.mark.parametrize(("b", "h_q", "kb"), [(2, 2, 37), (1, 3, 5), (1, 2, 300)])
@pytest.mark.parametrize("gamma", [0.9, 0.3, 1.0, 0.0])
def test_matches_twin(b, h_q, kb, gamma):
    inputs = _inputs(b, h_q, kb)
    js = _divergence(inputs[0], inputs[2])
    taus = _taus(js)
    assert len(taus) >= 2 + min(6, b * h_q)  # most heads' divergences are apart
    # the gate (sqrt JS < tau) reads no gamma and each head's programs are its own: the taus
    # near the divergences, which flip the heads' gates one at a time, at gamma 0.9; at every
    # gamma, no head and every head query-aware (tau 0 and 100)
    for tau in taus if gamma == 0.9 else taus[:2]:
        _check(*inputs, gamma=gamma, tau=tau, lo=2, hi=max(2, kb // 3))


def test_query_aware_heads_keep_lo_and_budgets_clamp():
    inputs = _inputs(1, 2, 64)
    query_aware, chosen, _ = _check(*inputs, tau=100.0, lo=3, hi=5)
    assert bool(query_aware.all())
    kept = chosen.sum(-1)  # lo blocks, and block 0 if it is not among them
    assert bool(((kept == 3) | (kept == 4)).all())
    query_aware, chosen, _ = _check(*inputs, tau=0.0, lo=3, hi=5)
    assert not bool(query_aware.any())
    assert bool((chosen.sum(-1) >= 3).all()) and bool((chosen.sum(-1) <= 6).all())  # + block 0


def test_per_head_gamma():
    inputs = _inputs(2, 4, 90, seed=1)
    gamma = torch.tensor([0.5, 1.0, 0.95, 0.0], device=DEVICE)
    _check(*inputs, gamma=gamma, tau=0.0, lo=1, hi=90)


def test_a_head_of_gamma_one_keeps_every_vertical():
    """A head of gamma 1 keeps every key block of its verticals, query-aware (tau 100) or not,
    whatever hi: it is dense, and FlexPrefill plans it so with nothing more."""
    inputs = _inputs(1, 4, 40, seed=3)
    gamma = torch.tensor([0.5, 1.0, 0.9, 1.0], device=DEVICE)
    for tau in (0.0, 100.0):
        _, chosen, _ = _check(*inputs, gamma=gamma, tau=tau, lo=1, hi=5)
        assert bool(chosen[:, [1, 3], 0].all()) and not bool(chosen[:, [0, 2], 0].all())
        assert not bool(chosen[:, :, 1].all())  # slashes: clamped to hi
    _, chosen, _ = _check(*inputs, gamma=1.0, tau=100.0, lo=1, hi=5)
    assert bool(chosen[:, :, 0].all())


@pytest.mark.parametrize("gamma", [0.5, 1.0, 0.99999999])
def test_map_gamma_of_query_aware_heads(gamma):
    """Every head query-aware (tau 100): its map's threshold is gamma, just below 1 at most
    (0.99999999 rounds to 1.0 in float32), per head too (NaN: just below 1, 0: 0)."""
    inputs = _inputs(1, 4, 40, seed=5)
    below_one = 1 - 2**-24
    query_aware, _, map_gamma = _check(*inputs, gamma=gamma, tau=100.0, lo=1, hi=40)
    assert bool(query_aware.all())
    assert map_gamma.tolist() == [[min(gamma, below_one)] * 4]
    per_head = torch.tensor([0.25, 1.0, math.nan, 0.0], device=DEVICE)
    _, _, map_gamma = _check(*inputs, gamma=per_head, tau=100.0, lo=1, hi=40)
    assert map_gamma.tolist() == [[0.25, below_one, below_one, 0.0]]


def test_lines_over_blocks(monkeypatch):
    """Lines of several blocks of the kernel's registers: the pooled scores' softmax and the
    divergence walk them too, so a gate near each head's divergence flips a head whose sums
    over the blocks are off."""
    monkeypatch.setattr(line_choice, "_MAX_BLOCK", 64)
    inputs = _inputs(1, 2, 100, seed=2)  # two blocks of 64 a line, the last one partial
    _check(*inputs, gamma=0.8, tau=0.0, lo=2, hi=100)
    _check(*inputs, gamma=torch.tensor([1.0, 0.6], device=DEVICE), tau=0.0, lo=2, hi=40)
    taus = _taus(_divergence(inputs[0], inputs[2]))[2:]
    assert len(taus) >= 4  # most heads' divergences are apart
    for tau in taus:
        _check(*inputs, gamma=0.9, tau=tau, lo=2, hi=13)


def _zero_heavy_lines():
    """Lines with zeros among their blocks: a gamma that keeps every block keeps the zeros too,
    one below 1 keeps only positive blocks (the twin's rule)."""
    vertical = torch.tensor([[[0.5, 0, 0.25, 0, 0.125, 0]]], device=DEVICE)
    slash = torch.tensor([[[0.25, 0, 0, 0.5, 0, 0]]], device=DEVICE)
    pooled = torch.randn(1, 1, 6, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    return vertical, slash, pooled


@pytest.mark.parametrize("gamma", [0.99999999, 1.0, 1 - 2**-24])
def test_gamma_near_one_follows_the_twin(gamma):
    # 0.99999999 rounds to 1.0 in float32; it is still below 1, so zeros stay out
    _, chosen, _ = _check(*_zero_heavy_lines(), gamma=gamma, tau=0.0, lo=0, hi=6)
    assert chosen.sum().item() == (12 if gamma >= 1 else 5)


def test_nan_per_head_gamma_keeps_lo():
    inputs = _zero_heavy_lines()
    gamma = torch.tensor([math.nan], device=DEVICE)
    _, chosen, _ = _check(*inputs, gamma=gamma, tau=0.0, lo=0, hi=6)
    assert chosen.sum().item() == 2  # block 0 of each line only
    _, chosen, _ = _check(*inputs, gamma=gamma, tau=0.0, lo=2, hi=6)
    assert chosen.sum().item() == 4


def test_strided_inputs():
    vertical, slash, pooled = _inputs(2, 2, 30, seed=3)
    pooled = pooled.transpose(0, 1).contiguous().transpose(0, 1)  # (B, H, KB) with B inner
    slash = torch.stack((slash, slash), -1)[..., 0]  # KB not unit-stride
    assert slash.stride(-1) == 2
    _check(vertical, slash, pooled, tau=0.0)


def test_nan_line():
    vertical, slash, pooled = _inputs(1, 3, 30, seed=4)
    vertical[0, 0, 5] = math.nan  # its divergence is NaN: not query-aware; its mass keeps nothing
    pooled[0, 2, 7] = math.nan  # ā is NaN: not query-aware
    kw = {"gamma": 0.9, "tau": 100.0, "lo": 2, "hi": 30}
    got = line_choice.choose_lines(vertical, slash, pooled, **kw)
    want = line_choice_reference.choose_lines(vertical, slash, pooled, **kw)
    assert got[0].tolist() == want[0].tolist() == [[False, True, False]]
    assert torch.equal(got[1], want[1])


def _args():
    vertical, slash, pooled = _inputs(1, 2, 30)
    return {"vertical": vertical, "slash": slash, "pooled": pooled, "gamma": 0.9, "tau": 0.1,
            "lo": 1, "hi": 30}  # fmt: skip


MALFORMED = [
    ({"vertical": torch.rand(2, 30)}, ValueError, "vertical"),
    ({"vertical": torch.rand(1, 2, 0)}, ValueError, "vertical"),
    ({"vertical": torch.rand(1, 2, 30).double()}, TypeError, "vertical"),
    ({"slash": torch.rand(1, 2, 31)}, ValueError, "slash"),
    ({"pooled": torch.randn(1, 2, 30).half()}, TypeError, "pooled"),
    ({"pooled": torch.randn(1, 1, 30)}, ValueError, "pooled"),
    ({"pooled": torch.randn(1, 2, 30, 1)}, ValueError, "pooled"),
    ({"gamma": -0.1}, ValueError, "gamma"),
    ({"gamma": torch.ones(3)}, ValueError, "gamma"),
    ({"gamma": torch.ones(2, dtype=torch.float64)}, TypeError, "gamma"),
    ({"tau": -1.0}, ValueError, "tau"),
    ({"lo": -1}, ValueError, "lo"),
    ({"hi": 0}, ValueError, "hi"),
    ({"backend": "fast"}, ValueError, "backend"),
]


@pytest.mark.parametrize(("change", "error", "name"), MALFORMED)
def test_malformed_input_is_named(change, error, name):
    args = {**_args(), **change}
    for key in ("vertical", "slash", "pooled"):
        args[key] = args[key].cpu()
    if isinstance(args["gamma"], torch.Tensor):
        args["gamma"] = args["gamma"].cpu()
    with pytest.raises(error, match=f"^{name}:"):
        api.choose_lines(**args)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_api_dispatch(backend):
    args = _args()
    got = api.choose_lines(**args, backend=backend)
    want = line_choice_reference.choose_lines(**args)
    assert all(torch.equal(x, y) for x, y in zip(got, want, strict=True))
