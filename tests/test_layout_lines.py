"""`Layout.from_lines` (MInference's vertical-slash layout without row sorts) against its twin,
the composition it replaces: the diagonal blocks by `from_block_mask`, then `with_columns` and
`with_diagonals`."""

import pytest
import torch

from attnsieve.api import line_layout
from attnsieve.layout import Layout, query_block_positions
from attnsieve.layout_spans import PAD, diagonal_bands, valid_slots
from attnsieve.methods.prefill.masks import window_block_mask

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the GPU's sorts and searches too
PARTS = [("block_idx", "block_count"), ("column_idx", "column_count")]
PARTS += [("span_start", "span_count"), ("span_end", "span_count")]


def twin(columns, offsets, n, m, bq, bk):
    diagonal = window_block_mask(n, m, bq, bk, 1, offsets.device)
    diagonal = diagonal.expand(*offsets.shape[:2], -1, -1)
    layout = Layout.from_block_mask(diagonal, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    _, last = query_block_positions(n, m, bq, offsets.device)
    visible = columns[:, :, None, :] <= last[:, None]
    return layout.with_columns(torch.where(visible, columns[:, :, None, :], -1))


def rows(layout, idx, count):
    """The counted prefix of every row of an index part, padded to the longest row."""
    idx, count = getattr(layout, idx).long(), getattr(layout, count)
    width = max(int(count.max()), 1)
    idx = torch.nn.functional.pad(idx, (0, max(0, width - idx.shape[-1])), value=PAD)
    return torch.where(valid_slots(idx[..., :width], count), idx[..., :width], PAD)


def assert_same_layout(a, b):
    for idx, count in PARTS:
        assert torch.equal(getattr(a, count).long(), getattr(b, count).long()), count
        assert torch.equal(rows(a, idx, count), rows(b, idx, count)), idx


def random_lines(g, b, h, m, c, s, spread, repeats):
    def draw(k, high):
        if repeats:
            return torch.randint(0, high, (b * h, k), generator=g)
        return torch.stack([torch.randperm(high, generator=g)[:k] for _ in range(b * h)])

    return draw(c, m).view(b, h, c), draw(s, min(m, spread)).view(b, h, s)


@pytest.mark.parametrize("seed", range(48))
def test_matches_the_composition_it_replaces(seed):
    """Random sizes: N above and below M, blocks of unequal sizes, a partial last query block,
    scattered and clustered diagonals (clustered ones merge into long bands), repeated columns
    and diagonals."""
    g = torch.Generator().manual_seed(seed)
    bq, bk = (16, 32, 64, 128)[seed % 4], (16, 32, 64, 128)[seed // 4 % 4]
    n = int(torch.randint(1, 400, (1,), generator=g))
    m = n + int(torch.randint(-n + 1, 200, (1,), generator=g))
    c, s = (int(torch.randint(1, min(m, k) + 1, (1,), generator=g)) for k in (40, 60))
    spread = m if seed % 2 else 3 * s
    columns, offsets = random_lines(g, 1 + seed % 2, 1 + seed % 3, m, c, s, spread, seed % 5 == 0)
    columns, offsets = columns.to(DEVICE), offsets.to(DEVICE)
    layout = Layout.from_lines(
        columns, offsets, block_q=bq, block_k=bk, num_queries=n, num_keys=m
    ).validate()
    expected = twin(columns, offsets, n, m, bq, bk).with_diagonals(offsets)
    assert_same_layout(layout, expected)
    assert torch.equal(layout.to_dense_mask(), expected.to_dense_mask())


def test_worked_example():
    """N = M = 8 in blocks of 4: query block 1 (rows 4-7) reaches key block 1 on its diagonal;
    diagonal 5 crosses keys [4 - 5, 7 - 5] = [0, 2] there, and column 3 sits beside it."""
    columns, offsets = torch.tensor([[[3, 6]]]), torch.tensor([[[5]]])
    layout = Layout.from_lines(columns, offsets, block_q=4, block_k=4, num_queries=8, num_keys=8)
    assert rows(layout, "block_idx", "block_count").tolist() == [[[[0], [1]]]]
    assert layout.span_count.tolist() == [[[0, 1]]]
    assert (layout.span_start[0, 0, 1, 0].item(), layout.span_end[0, 0, 1, 0].item()) == (0, 3)
    # column 6 lies in block 1's diagonal block; column 3 in block 0's, and in block 1 it lies
    # just past the span
    assert layout.column_count.tolist() == [[[0, 1]]]
    assert layout.column_idx[0, 0, 1, 0].item() == 3


@pytest.mark.parametrize("c,s", [(0, 5), (5, 0), (0, 0)])
def test_no_columns_or_no_diagonals(c, s):
    g = torch.Generator().manual_seed(c + s)
    columns, offsets = random_lines(g, 2, 2, 100, c, s, 100, False)
    args = dict(block_q=32, block_k=16, num_queries=90, num_keys=100)
    layout = Layout.from_lines(columns, offsets, **args).validate()
    expected = twin(columns, offsets, 90, 100, 32, 16).with_diagonals(offsets)
    assert_same_layout(layout, expected)


def test_repeated_entries_count_once():
    columns, offsets = torch.tensor([[[2, 2, 30]]]), torch.tensor([[[9, 9, 20]]])
    args = dict(block_q=8, block_k=8, num_queries=40, num_keys=40)
    layout = Layout.from_lines(columns, offsets, **args).validate()
    unique = Layout.from_lines(torch.tensor([[[2, 30]]]), torch.tensor([[[9, 20]]]), **args)
    assert_same_layout(layout, unique)


@pytest.mark.parametrize(
    "columns,offsets,error,match",
    [
        ([[[1]]], torch.tensor([[[1]]]), TypeError, "columns: expected an int32/int64 tensor"),
        (torch.tensor([[[1.0]]]), torch.tensor([[[1]]]), TypeError, "columns: expected an int"),
        (torch.tensor([[1]]), torch.tensor([[[1]]]), ValueError, "columns: expected shape"),
        (torch.tensor([[[1]]]), torch.tensor([[[1], [2]]]), ValueError, "offsets: expected shape"),
        (torch.tensor([[[16]]]), torch.tensor([[[1]]]), ValueError, r"columns: .* \[0, 16\)"),
        (torch.tensor([[[1]]]), torch.tensor([[[-1]]]), ValueError, r"offsets: .* \[0, 16\)"),
    ],
)
def test_bad_arguments(columns, offsets, error, match):
    with pytest.raises(error, match=match):
        Layout.from_lines(columns, offsets, block_q=8, block_k=8, num_queries=16, num_keys=16)


def test_bad_sizes():
    one = torch.tensor([[[1]]])
    with pytest.raises(ValueError, match="block_q: expected a positive int"):
        Layout.from_lines(one, one, block_q=0, block_k=8, num_queries=16, num_keys=16)


@pytest.mark.parametrize("seed", range(12))
def test_kernel_matches_its_twin(seed):
    """`attnsieve.api.line_layout`'s Triton rows (`attnsieve.kernels.line_rows`, the interpreter on
    the CPU) against `layout_spans.line_rows`: index widths and padding too, so the test compares
    whole tensors."""
    g = torch.Generator().manual_seed(100 + seed)
    bq, bk = (16, 32, 64)[seed % 3], (16, 64, 32)[seed // 3 % 3]
    n = int(torch.randint(1, 300, (1,), generator=g))
    m = n + int(torch.randint(-n + 1, 150, (1,), generator=g))
    c, s = (int(torch.randint(0, min(m, k) + 1, (1,), generator=g)) for k in (700, 60))
    spread = m if seed % 2 else 3 * s + 1
    columns, offsets = random_lines(g, 1 + seed % 2, 1 + seed % 3, m, c, s, spread, seed % 4 == 0)
    assert_kernel_matches(columns, offsets, block_q=bq, block_k=bk, num_queries=n, num_keys=m)


def test_kernel_over_many_bands_and_columns():
    """More bands and columns than a program takes at once (512): its loops carry the counts."""
    g = torch.Generator().manual_seed(7)
    columns, offsets = random_lines(g, 1, 2, 40000, 1200, 2000, 40000, False)
    args = dict(block_q=16, block_k=16, num_queries=70, num_keys=40000)
    assert int(diagonal_bands(offsets, offsets + 1, 15)[2].min()) > 512
    assert_kernel_matches(columns, offsets, **args)


def assert_kernel_matches(columns, offsets, **args):
    columns, offsets = columns.to(DEVICE), offsets.to(DEVICE)
    kernel = line_layout(columns, offsets, backend="triton", **args)
    reference = Layout.from_lines(columns, offsets, **args)
    for idx, count in PARTS:
        for name in (idx, count):
            assert torch.equal(getattr(kernel, name), getattr(reference, name)), name


def test_line_layout_checks_as_from_lines():
    args = dict(block_q=8, block_k=8, num_queries=16, num_keys=16)
    with pytest.raises(TypeError, match="columns: expected an int32/int64 tensor"):
        line_layout(torch.tensor([[[1.0]]]), torch.tensor([[[1]]]), backend="triton", **args)
    with pytest.raises(ValueError, match=r"offsets: .* \[0, 16\)"):
        line_layout(torch.tensor([[[1]]]), torch.tensor([[[16]]]), backend="triton", **args)
    with pytest.raises(ValueError, match="backend: expected one of"):
        line_layout(torch.tensor([[[1]]]), torch.tensor([[[1]]]), backend="cuda", **args)
