"""FlexPrefill's line-choice kernel vs its PyTorch twin (TRITON_INTERPRET=1 on CPU): the same
query-aware heads and the same chosen blocks, in registers and over blocks, per-head gamma, GQA,
strided inputs; and the argument checks of `api.choose_lines`."""

import math

import pytest
import torch

from attnsieve import api
from attnsieve.kernels import line_choice, line_choice_reference

pytestmark = pytest.mark.usefixtures("nan_empty")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(b, h_q, h_kv, n, kb, d=32, seed=0):
    """Lines of eighths (their sums are exact, so both sides find the same cut) with ties; q in
    float16, pooled keys in float32."""
    g = torch.Generator().manual_seed(seed)
    vertical = torch.randint(0, 9, (b, h_q, kb), generator=g).float() / 8
    slash = torch.randint(0, 3, (b, h_q, kb), generator=g).float() / 8
    q = torch.randn(b, h_q, n, d, generator=g).half()
    k_pooled = torch.randn(b, h_kv, kb, d, generator=g)
    return [t.to(DEVICE) for t in (vertical, slash, q, k_pooled)]


def _divergence(vertical, q, k_pooled, last, scale):
    """The twin's sqrt(JS(ā, â)) per head, to keep tau away from it."""
    b, h_q, n, d = q.shape
    h_kv, kb = k_pooled.shape[1:3]
    q_mean = q[:, :, n - last :].float().mean(2).view(b, h_kv, h_q // h_kv, d)
    pooled = (q_mean @ k_pooled.transpose(-1, -2) * scale).softmax(-1).view(b, h_q, kb)
    return line_choice_reference.sqrt_js_divergence(pooled, vertical)


def _check(vertical, slash, q, k_pooled, **kw):
    kw = {"last": min(16, q.shape[2]), "gamma": 0.9, "tau": 0.1, "lo": 1, "hi": 10**6, **kw}
    scale = 1 / math.sqrt(q.shape[3])
    js = _divergence(vertical, q, k_pooled, kw["last"], scale)
    assert bool(((js - kw["tau"]).abs() > 1e-4).all()), "a head too near tau to compare"
    got = line_choice.choose_lines(vertical, slash, q, k_pooled, scale=scale, **kw)
    want = line_choice_reference.choose_lines(vertical, slash, q, k_pooled, scale=scale, **kw)
    assert got[0].dtype == got[1].dtype == torch.bool
    assert got[1].shape == (*vertical.shape[:2], 2, vertical.shape[2])
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert bool(got[1][..., 0].all())
    return got


def _taus(js):
    """0, 100 (no head, every head query-aware) and a tau 3e-4 on either side of each head's
    divergence, where no head lies within 1e-4 of it: a divergence off by more flips a head."""
    near = [float(x) + e for x in js.flatten().tolist() for e in (-3e-4, 3e-4)]
    return [0.0, 100.0] + [t for t in near if bool(((js - t).abs() > 1e-4).all())][:6]


@pytest.mark.parametrize(
    ("b", "h_q", "h_kv", "n", "kb"), [(2, 4, 2, 50, 37), (1, 3, 1, 16, 5), (1, 2, 2, 70, 300)]
)
@pytest.mark.parametrize("gamma", [0.9, 0.3, 1.0, 0.0])
def test_matches_twin(b, h_q, h_kv, n, kb, gamma):
    inputs = _inputs(b, h_q, h_kv, n, kb)
    js = _divergence(inputs[0], inputs[2], inputs[3], min(16, n), 1 / math.sqrt(32))
    taus = _taus(js)
    assert len(taus) >= 2 + min(6, b * h_q)  # most heads' divergences are apart
    for tau in taus:
        _check(*inputs, gamma=gamma, tau=tau, lo=2, hi=max(2, kb // 3))


def test_query_aware_heads_keep_lo_and_budgets_clamp():
    inputs = _inputs(1, 2, 1, 40, 64)
    query_aware, chosen = _check(*inputs, tau=100.0, lo=3, hi=5)
    assert bool(query_aware.all())
    kept = chosen.sum(-1)  # lo blocks, and block 0 if it is not among them
    assert bool(((kept == 3) | (kept == 4)).all())
    query_aware, chosen = _check(*inputs, tau=0.0, lo=3, hi=5)
    assert not bool(query_aware.any())
    assert bool((chosen.sum(-1) >= 3).all()) and bool((chosen.sum(-1) <= 6).all())  # + block 0


def test_per_head_gamma_and_last_rows():
    inputs = _inputs(2, 4, 2, 33, 90, seed=1)
    gamma = torch.tensor([0.5, 1.0, 0.95, 0.0], device=DEVICE)
    _check(*inputs, gamma=gamma, tau=0.0, lo=1, hi=90, last=33)
    _check(*inputs, gamma=gamma, tau=0.0, lo=1, hi=90, last=1)


@pytest.mark.parametrize("last", [128, 200, 300])
def test_last_rows_over_several_loads(last):
    """More last rows than the kernel sums in one round of loads (4 x 32): a query-aware gate
    near each head's divergence flips the head if their mean is off."""
    inputs = _inputs(1, 3, 1, 300, 40, seed=4)
    js = _divergence(inputs[0], inputs[2], inputs[3], last, 1 / math.sqrt(32))
    taus = _taus(js)[2:]
    assert len(taus) >= 4  # most heads' divergences are apart
    for tau in taus:
        _check(*inputs, gamma=0.9, tau=tau, lo=2, hi=13, last=last)


def test_lines_over_blocks(monkeypatch):
    monkeypatch.setattr(line_choice, "_MAX_BLOCK", 64)
    inputs = _inputs(1, 2, 1, 20, 150, seed=2)
    _check(*inputs, gamma=0.8, tau=0.0, lo=2, hi=150)
    _check(*inputs, gamma=torch.tensor([1.0, 0.6], device=DEVICE), tau=0.0, lo=2, hi=40)


def _zero_heavy_lines():
    """Lines with zeros among their blocks: a gamma that keeps every block keeps the zeros too,
    one below 1 keeps only positive blocks (the twin's rule)."""
    vertical = torch.tensor([[[0.5, 0, 0.25, 0, 0.125, 0]]], device=DEVICE)
    slash = torch.tensor([[[0.25, 0, 0, 0.5, 0, 0]]], device=DEVICE)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 4, 16, generator=g).half().to(DEVICE)
    k_pooled = torch.randn(1, 1, 6, 16, generator=g).to(DEVICE)
    return vertical, slash, q, k_pooled


@pytest.mark.parametrize("gamma", [0.99999999, 1.0, 1 - 2**-24])
def test_gamma_near_one_follows_the_twin(gamma):
    # 0.99999999 rounds to 1.0 in float32; it is still below 1, so zeros stay out
    _, chosen = _check(*_zero_heavy_lines(), gamma=gamma, tau=0.0, lo=0, hi=6, last=4)
    assert chosen.sum().item() == (12 if gamma >= 1 else 5)


def test_nan_per_head_gamma_keeps_lo():
    inputs = _zero_heavy_lines()
    gamma = torch.tensor([math.nan], device=DEVICE)
    _, chosen = _check(*inputs, gamma=gamma, tau=0.0, lo=0, hi=6, last=4)
    assert chosen.sum().item() == 2  # block 0 of each line only
    _, chosen = _check(*inputs, gamma=gamma, tau=0.0, lo=2, hi=6, last=4)
    assert chosen.sum().item() == 4


def test_strided_inputs():
    vertical, slash, q, k_pooled = _inputs(2, 2, 1, 24, 30, seed=3)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # (B, H, N, D) with H inner
    k_pooled = k_pooled.transpose(-1, -2).contiguous().transpose(-1, -2)  # D not unit-stride
    slash = slash.transpose(0, 1).contiguous().transpose(0, 1)
    _check(vertical, slash, q, k_pooled, tau=0.0)


def test_nan_line():
    vertical, slash, q, k_pooled = _inputs(1, 2, 1, 24, 30, seed=4)
    vertical[0, 0, 5] = math.nan  # its divergence is NaN: not query-aware; its mass keeps nothing
    scale = 1 / math.sqrt(32)
    kw = {"last": 8, "gamma": 0.9, "tau": 100.0, "lo": 2, "hi": 30, "scale": scale}
    got = line_choice.choose_lines(vertical, slash, q, k_pooled, **kw)
    want = line_choice_reference.choose_lines(vertical, slash, q, k_pooled, **kw)
    assert got[0].tolist() == want[0].tolist() == [[False, True]]
    assert torch.equal(got[1], want[1])


def _args():
    vertical, slash, q, k_pooled = _inputs(1, 2, 1, 24, 30)
    return {"vertical": vertical, "slash": slash, "q": q, "k_pooled": k_pooled, "last": 8,
            "gamma": 0.9, "tau": 0.1, "lo": 1, "hi": 30}  # fmt: skip


MALFORMED = [
    ({"q": torch.randn(2, 24, 32)}, ValueError, "q"),
    ({"k_pooled": torch.randn(1, 1, 30, 32).half()}, TypeError, "k_pooled"),
    ({"k_pooled": torch.randn(1, 3, 30, 32)}, ValueError, "k_pooled"),
    ({"k_pooled": torch.randn(1, 1, 29, 32)}, ValueError, "vertical"),
    ({"vertical": torch.rand(1, 2, 30).double()}, TypeError, "vertical"),
    ({"slash": torch.rand(1, 2, 31)}, ValueError, "slash"),
    ({"last": 0}, ValueError, "last"),
    ({"last": 25}, ValueError, "last"),
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
    for key in ("vertical", "slash", "q", "k_pooled"):
        args[key] = args[key].cpu()
    if isinstance(args["gamma"], torch.Tensor):
        args["gamma"] = args["gamma"].cpu()
    with pytest.raises(error, match=f"^{name}:"):
        api.choose_lines(**args)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_api_dispatch(backend):
    args = _args()
    got = api.choose_lines(**args, backend=backend)
    args.pop("last")
    want = line_choice_reference.choose_lines(**args, last=8, scale=1 / math.sqrt(32))
    assert all(torch.equal(x, y) for x, y in zip(got, want, strict=True))
