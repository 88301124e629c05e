"""The block-mask packing kernel against its twin, `pack_sorted` (compiled on a GPU, else the
interpreter), and `api.block_layout` against `Layout.from_block_mask`."""

import pytest
import torch

from attnsieve.api import block_layout
from attnsieve.kernels.pack import pack_block_mask
from attnsieve.layout import Layout
from attnsieve.layout_spans import pack_sorted

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    ("shape", "p"),
    [
        ((1, 1, 1, 1), 0.5),
        ((2, 3, 5, 3), 0.5),
        ((1, 2, 4, 1500), 0.3),  # a row longer than one read of the kernel
        ((1, 1, 7, 2048), 0.01),
        ((2, 1, 3, 64), 0.0),  # nothing kept
        ((1, 2, 3, 100), 1.0),  # everything kept
    ],
)
def test_packed_lists_match_the_twin(shape, p):
    g = torch.Generator().manual_seed(sum(shape))
    mask = (torch.rand(shape, generator=g) < p).to(DEVICE)
    idx, count = pack_block_mask(mask)
    want_idx, want_count = pack_sorted(mask)
    assert idx.dtype == torch.int32 and count.dtype == torch.int32
    assert torch.equal(idx, want_idx) and torch.equal(count, want_count)


def test_strided_and_broadcast_masks():
    g = torch.Generator().manual_seed(0)
    base = (torch.rand(1, 1, 6, 40, generator=g) < 0.4).to(DEVICE)
    for mask in (base.expand(2, 3, -1, -1), base.transpose(2, 3)[..., :6, :].mT, base[..., ::2]):
        idx, count = pack_block_mask(mask)
        want_idx, want_count = pack_sorted(mask)
        assert torch.equal(idx, want_idx) and torch.equal(count, want_count)


def test_block_layout_is_from_block_mask():
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(2, 3, 4, 5, generator=g) < 0.5).to(DEVICE)
    sizes = dict(block_q=32, block_k=16, num_queries=100, num_keys=70)
    for backend in ("triton", "reference"):
        got = block_layout(mask, **sizes, backend=backend)
        want = Layout.from_block_mask(mask, **sizes)
        assert torch.equal(got.block_idx, want.block_idx)
        assert torch.equal(got.block_count, want.block_count)
        assert (got.block_q, got.num_keys) == (32, 70)


def test_block_layout_checks_like_from_block_mask():
    sizes = dict(block_q=32, block_k=16, num_queries=100, num_keys=70)
    with pytest.raises(TypeError, match="mask: expected a torch.bool tensor"):
        block_layout(torch.zeros(1, 1, 4, 5, device=DEVICE), **sizes, backend="triton")
    with pytest.raises(ValueError, match=r"mask: expected shape \(B >= 1, H >= 1, 4, 5\)"):
        block_layout(torch.zeros(1, 1, 4, 6, dtype=torch.bool, device=DEVICE), **sizes)
    with pytest.raises(ValueError, match="num_keys: expected a positive int"):
        block_layout(torch.zeros(1, 1, 4, 5, dtype=torch.bool), **{**sizes, "num_keys": 0})
