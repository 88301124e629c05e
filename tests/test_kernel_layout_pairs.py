"""The layout pair-count kernel against its twin, `Layout.pairs` (compiled on a GPU, else the
interpreter)."""

import pytest
import torch

from attnsieve.api import layout_density
from attnsieve.checks import cdiv
from attnsieve.kernels.layout_pairs import layout_pairs
from attnsieve.layout import Layout

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_layout(b, h, n, m, bq, bk, p=0.3, columns=0, slashes=0, seed=0):
    """Random blocks, then random columns and diagonals (spans) on top."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, h, cdiv(n, bq), cdiv(m, bk), generator=g) < p
    layout = Layout.from_block_mask(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    if columns:
        cols = torch.randint(-1, m, (b, h, cdiv(n, bq), columns), generator=g)
        layout = layout.with_columns(cols)
    if slashes:
        layout = layout.with_diagonals(torch.randint(0, m, (b, h, slashes), generator=g))
    return layout.to(DEVICE)


CASES = [  # (b, h, n, m, bq, bk, columns, slashes)
    (1, 1, 64, 64, 16, 16, 0, 0),
    (2, 3, 100, 130, 32, 16, 5, 0),  # N != M, neither a multiple of the blocks
    (1, 2, 130, 100, 16, 32, 0, 4),  # N > M: early query blocks see no key
    (2, 2, 97, 97, 32, 32, 3, 3),
    (1, 1, 1, 90, 16, 16, 2, 2),  # one query
    (1, 2, 700, 700, 64, 64, 200, 6),  # more entries a row than the kernel reads at a time
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("causal", [True, False])
def test_pair_counts_match_the_twin(case, causal):
    b, h, n, m, bq, bk, columns, slashes = case
    layout = random_layout(b, h, n, m, bq, bk, columns=columns, slashes=slashes, seed=sum(case))
    got = layout_pairs(layout, causal)
    assert got.shape == (b, h, cdiv(n, bq)) and got.dtype == torch.int64
    assert torch.equal(got.sum(-1), layout.pairs(causal))
    torch.testing.assert_close(
        layout_density(layout, causal=causal, backend="triton"),
        layout.density(causal, reduce=False),
        rtol=0,
        atol=0,
    )


def test_broadcast_and_dense_layouts():
    """A layout whose index tensors are expanded views (zero strides), a dense and an empty one."""
    base = random_layout(1, 1, 96, 96, 32, 32, columns=2)
    expanded = Layout(
        base.block_idx.expand(2, 3, -1, -1), base.block_count.expand(2, 3, -1), 32, 32, 96, 96,
        column_idx=base.column_idx.expand(2, 3, -1, -1),
        column_count=base.column_count.expand(2, 3, -1),
    )  # fmt: skip
    assert expanded.block_idx.stride()[:2] == (0, 0)
    got = layout_pairs(expanded).sum(-1)
    assert torch.equal(got, expanded.pairs()) and torch.equal(got, base.pairs().expand(2, 3))
    dense = Layout.dense(200, 260, block_q=32, block_k=64, device=DEVICE)
    assert torch.equal(layout_pairs(dense).sum(-1), dense.pairs())
    assert float(layout_density(dense, backend="triton").mean()) == pytest.approx(1.0)
    empty = random_layout(1, 2, 64, 64, 16, 16, p=0.0)
    assert not layout_pairs(empty).any()


def test_layout_density_checks_and_falls_back():
    layout = random_layout(1, 1, 64, 64, 16, 16, columns=1)
    with pytest.raises(TypeError, match="layout: expected a Layout"):
        layout_density(layout.block_idx)
    with pytest.raises(TypeError, match="causal: expected a bool"):
        layout_density(layout, causal=1)
    reference = layout_density(layout, backend="reference")
    torch.testing.assert_close(reference, layout.density(reduce=False), rtol=0, atol=0)
