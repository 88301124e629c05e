"""The Hopper (Gluon) path of FlexPrefill's one-pass last-query kernel against the twin, and the
dispatch that picks it. Gluon has no interpreter: the kernel tests need an sm_90 GPU."""

import math

import pytest
import torch

from attnsieve.kernels import gluon_written_for, planning, planning_hopper, planning_reference
from tests.test_planning_kernels import _close

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
needs_hopper = pytest.mark.skipif(not HOPPER, reason="Gluon wgmma kernel: an sm_90 GPU only")


@pytest.fixture
def launches(monkeypatch):
    """Calls of the Hopper kernel's launcher, so a test knows which path ran."""
    calls = []
    real = planning_hopper.block_parts

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(planning_hopper, "block_parts", spy)
    return calls


def test_only_what_the_kernel_covers_is_sent_to_it():
    """128-key blocks, 33-128 last rows, head dim 64 or 128, 16-bit q and k, k contiguous, on an
    sm_90 GPU: anything else (and every CPU tensor) stays on the Triton kernel."""
    dev = "cuda" if HOPPER else "cpu"
    q = torch.zeros(1, 4, 300, 128, device=dev, dtype=torch.float16)
    k = torch.zeros(1, 2, 300, 128, device=dev, dtype=torch.float16)
    assert planning_hopper.fits(q, k, 128, 128) == HOPPER
    assert planning_hopper.fits(q[..., :64], k[..., :64].contiguous(), 128, 64) == HOPPER
    assert not planning_hopper.fits(q, k, 64, 128)  # other blocks
    assert not planning_hopper.fits(q, k, 128, 32)  # 32 last rows or fewer
    assert not planning_hopper.fits(q[..., :32], k[..., :32].contiguous(), 128, 128)
    assert not planning_hopper.fits(q.float(), k.float(), 128, 128)
    assert not planning_hopper.fits(q, k.bfloat16(), 128, 128)
    assert not planning_hopper.fits(q, k.transpose(1, 2).contiguous().transpose(1, 2), 128, 128)
    assert not planning_hopper.fits(q.cpu(), k.cpu(), 128, 128)


def test_gluon_kernels_run_on_the_release_they_are_written_for():
    """Triton 3.6's Gluon only: 3.9 renamed TMA's copy to shared memory."""
    assert gluon_written_for("3.6.0") and gluon_written_for("3.6.1+git")
    assert not gluon_written_for("3.5.1")
    assert not gluon_written_for("3.9.0")


def test_program_tiles(monkeypatch):
    """Head dim 128: as many tiles as leave at most one wave of programs (two an SM), at most 64;
    head dim 64: four times the Triton kernel's, at most 32."""
    monkeypatch.setattr(planning_hopper, "sm_count", lambda device: 132)
    cpu = torch.device("cpu")
    for key_tiles in (256, 512, 1024):  # Llama-3-8B at 32K / 64K / 128K: 32 heads x 2 halves
        assert planning_hopper.program_tiles(128, 64, key_tiles, 8, cpu) == 64
    assert planning_hopper.program_tiles(128, 64, 100, 8, cpu) == 25  # 4 chunks of 25
    assert planning_hopper.program_tiles(128, 512, 100, 8, cpu) == 64  # over a wave: one, capped
    assert planning_hopper.program_tiles(64, 18, 64, 1, cpu) == 4  # SmolLM2 at 8K
    assert planning_hopper.program_tiles(64, 18, 2048, 8, cpu) == 32


# (batch, H_q, H_kv, N, M, D, dtype, last_q): GQA 2/3/4, batch 2, N != M, M unaligned to the
# 128-key tiles, 64 row slots (last_q 40) and 128 (100: padding rows), M < last_q (rows that see
# no key), several programs a head (M = 4133: 33 key tiles, 3 a program on 132 SMs); head dim 128
# with 64 row slots (last_q 50)
SHAPES = [
    (2, 4, 2, 300, 1001, 64, torch.float16, 128),
    (1, 8, 2, 4133, 4133, 128, torch.bfloat16, 128),
    (1, 3, 1, 200, 700, 128, torch.float16, 100),
    (1, 2, 1, 50, 2000, 64, torch.bfloat16, 40),
    (1, 2, 2, 150, 100, 64, torch.float16, 128),
    (1, 4, 2, 500, 800, 128, torch.bfloat16, 50),
]


def _inputs(b, h_q, h_kv, n, m, d, dtype, sharp=3.0):
    g = torch.Generator().manual_seed(n + m)
    q = (torch.randn(b, h_q, n, d, generator=g) * sharp).to("cuda", dtype)
    k = torch.randn(b, h_kv, m, d, generator=g).to("cuda", dtype)
    return q, k


def _matches_twin(q, k, last_q):
    """(vertical, slash, pooled) as the twin's, and (vertical, slash) without pooled."""
    for pooled in (True, False):
        kw = dict(last_q=last_q, block_k=128, pooled=pooled)
        got = planning.last_query_stats(q, k, **kw)
        want = planning_reference.last_query_stats(q, k, **kw)
        for g, w in zip(got, want, strict=True):
            _close(g, w, torch.float16)


@needs_hopper
@pytest.mark.parametrize("shape", SHAPES)
def test_last_query_stats(shape, launches):
    q, k = _inputs(*shape[:-1])
    _matches_twin(q, k, shape[-1])
    assert len(launches) == 2


@needs_hopper
@pytest.mark.parametrize("tiles", [1, 3, 8])
def test_any_tiles_per_program_at_head_dim_64(tiles, launches, monkeypatch):
    """Programs walking 4, 12 or 32 key tiles (four times the Triton kernel's; the last one
    partial) give the same sums."""
    monkeypatch.setattr(planning, "sum_tiles_per_program", lambda rows, key_tiles, device: tiles)
    _matches_twin(*_inputs(1, 4, 2, 300, 1700, 64, torch.bfloat16), 128)
    assert len(launches) == 2


@needs_hopper
@pytest.mark.parametrize("sms", [132, 8, 2])
def test_any_tiles_per_program_at_head_dim_128(sms, launches, monkeypatch):
    """At head dim 128 the tiles a program follow the SMs (at most one wave of programs): 1, 7
    or all 14 key tiles a program here, the last one partial, give the same sums."""
    monkeypatch.setattr(planning_hopper, "sm_count", lambda device: sms)
    _matches_twin(*_inputs(1, 4, 2, 300, 1700, 128, torch.bfloat16), 128)
    assert len(launches) == 2


@needs_hopper
def test_nonfinite_inputs_match_the_twin(launches):
    """A NaN query row and infinite keys: the rows without a softmax are zeroed, as the twin
    does."""
    q, k = _inputs(2, 4, 2, 300, 500, 64, torch.float16)
    q[0, 1, 250, 3] = math.nan
    k[0, 0, 37, 2], k[1, 1, 3, 0] = math.inf, -math.inf
    kw = dict(last_q=128, block_k=128, pooled=True)
    *got, got_pooled = planning.last_query_stats(q, k, **kw)
    *want, want_pooled = planning_reference.last_query_stats(q, k, **kw)
    for g, w in zip(got, want, strict=True):
        _close(g, w, torch.float16)
    torch.testing.assert_close(got_pooled, want_pooled, rtol=2e-3, atol=2e-3, equal_nan=True)
    assert len(launches) == 1
