"""The line block-mask kernel (compiled on a GPU, else the interpreter) against its twin, as a
mask and as a layout's packed lists, and the twin against a token-level construction of the same
blocks."""

import pytest
import torch

from attnsieve import api
from attnsieve.kernels.line_mask import line_block_lists, line_block_mask
from attnsieve.kernels.line_mask_reference import line_block_mask as line_block_mask_reference
from attnsieve.layout import causal_token_mask
from attnsieve.layout_spans import pack_sorted

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(b, h, n, m, bq, bk, band, seed, p=0.2):
    g = torch.Generator().manual_seed(seed)
    qb, kb = -(-n // bq), -(-m // bk)
    verticals = torch.rand(b, h, kb, generator=g) < p
    bands = torch.rand(b, h, -(-m // band), generator=g) < p
    extra = torch.rand(b, h, qb, kb, generator=g) < p
    extra_heads = torch.rand(b, h, generator=g) < 0.5
    return verticals, bands, extra, extra_heads


def _token_blocks(on_pairs, n, m, bq, bk):
    """bool (B, H, QB, KB): blocks holding a True (query, key) pair of (B, H, N, M)."""
    b, h = on_pairs.shape[:2]
    padded = torch.nn.functional.pad(on_pairs, (0, -m % bk, 0, -n % bq))
    return padded.view(b, h, -(-n // bq), bq, -(-m // bk), bk).any(5).any(3)


@pytest.mark.parametrize("band", [1, 8, 13])
def test_twin_matches_token_lines(band):
    """A block is kept iff a visible pair of it lies in a chosen key block or on a chosen
    diagonal, or it is a diagonal block (the last band partial; N != M, unaligned)."""
    b, h, n, m, bq, bk = 2, 3, 70, 90, 16, 8
    verticals, bands, _, _ = _inputs(b, h, n, m, bq, bk, band, seed=band)
    visible = causal_token_mask(n, m, 0, n)  # (N, M)
    offset = (torch.arange(n)[:, None] + (m - n) - torch.arange(m)[None, :]).clamp(min=0)
    on_diagonal = bands.repeat_interleave(band, -1)[..., :m][..., offset]  # (B, H, N, M)
    in_column = verticals.repeat_interleave(bk, -1)[..., None, :m]
    self_pair = offset == 0  # each query's own key: the diagonal blocks
    want = _token_blocks((on_diagonal | in_column | self_pair) & visible, n, m, bq, bk)
    got = line_block_mask_reference(
        verticals, bands, band=band, block_q=bq, block_k=bk, num_queries=n, num_keys=m
    )
    assert want.any() and not want.all()
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    ("b", "h", "n", "m", "bq", "bk", "band"),
    [
        (1, 1, 1, 1, 16, 16, 16),
        (2, 3, 70, 90, 16, 8, 8),
        (1, 2, 1000, 1000, 128, 128, 128),  # FlexPrefill's blocks, N unaligned
        (1, 2, 300, 1301, 64, 32, 32),  # M > N, more key blocks than one tile of the kernel
        (2, 1, 200, 130, 16, 32, 5),  # M < N: early rows see nothing; a band narrower
        (1, 1, 77, 77, 32, 16, 1),  # one diagonal a band
        (1, 1, 3000, 3000, 16, 16, 16),  # early query blocks see fewer key blocks than a tile
    ],
)
def test_kernel_matches_the_twin(b, h, n, m, bq, bk, band):
    verticals, bands, extra, extra_heads = _inputs(b, h, n, m, bq, bk, band, seed=n + m)
    sizes = dict(band=band, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    for args in (
        (bands, None, None),
        (None, extra, None),
        (bands, extra, extra_heads),
    ):
        want = line_block_mask_reference(verticals, args[0], **sizes, extra=args[1],
                                         extra_heads=args[2])  # fmt: skip
        on_device = [None if t is None else t.to(DEVICE) for t in (verticals, *args)]
        kwargs = dict(**sizes, extra=on_device[2], extra_heads=on_device[3])
        got = line_block_mask(*on_device[:2], **kwargs)
        assert got.dtype == torch.bool
        assert torch.equal(got.cpu(), want)
        _check_lists(line_block_lists(*on_device[:2], **kwargs), want)


def _check_lists(got, mask):
    """The kernel's lists are `pack_sorted`'s of the twin's mask, bit for bit (PAD included)."""
    idx, count = pack_sorted(mask)
    assert got[0].dtype == got[1].dtype == torch.int32
    assert torch.equal(got[0].cpu(), idx.to(torch.int32))
    assert torch.equal(got[1].cpu(), count.to(torch.int32))


def test_strided_inputs():
    """Views of stacked verticals and slashes (FlexPrefill's) and expanded heads."""
    n, m, bq, bk = 200, 260, 32, 32
    lines = torch.rand(2, 3, 2, 9, generator=torch.Generator().manual_seed(3)) < 0.3
    verticals, bands = lines.unbind(2)
    heads = torch.tensor([True, False, True]).expand(2, 3)
    extra = (torch.rand(1, 1, 7, 9) < 0.3).expand(2, 3, 7, 9)
    sizes = dict(band=bk, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    want = line_block_mask_reference(verticals, bands, **sizes, extra=extra, extra_heads=heads)
    args = (verticals.to(DEVICE), bands.to(DEVICE))
    kwargs = dict(**sizes, extra=extra.to(DEVICE), extra_heads=heads.to(DEVICE))
    assert torch.equal(line_block_mask(*args, **kwargs).cpu(), want)
    _check_lists(line_block_lists(*args, **kwargs), want)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_api_layout_is_the_mask_layout(backend):
    """`api.line_block_layout` is `api.block_layout` of `api.line_block_mask` (Triton: one
    launch); a key block past the chosen ones that only ``extra`` keeps stays in its row."""
    n, m, bq, bk = 300, 1301, 64, 32
    verticals, bands, extra, heads = _inputs(2, 2, n, m, bq, bk, bk, seed=7)
    on_device = [t.to(DEVICE) for t in (verticals, bands, extra, heads)]
    sizes = dict(block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    kwargs = dict(**sizes, band=bk, extra=on_device[2], extra_heads=on_device[3])
    mask = api.line_block_mask(*on_device[:2], **kwargs, backend=backend)
    want = api.block_layout(mask, **sizes, backend="reference")
    got = api.line_block_layout(*on_device[:2], **kwargs, backend=backend)
    assert torch.equal(got.block_idx.cpu(), want.block_idx.cpu())
    assert torch.equal(got.block_count.cpu(), want.block_count.cpu())
    with pytest.raises(ValueError, match="^extra_heads"):
        api.line_block_layout(*on_device[:2], **sizes, band=bk, extra_heads=on_device[3])
    with pytest.raises(ValueError, match=r"^verticals: a layout needs B >= 1"):
        api.line_block_layout(on_device[0][:0], None, **sizes, band=bk, backend=backend)


def test_empty_batch_and_heads():
    for b, h in ((0, 2), (2, 0)):
        none = torch.zeros(b, h, 4, dtype=torch.bool)
        sizes = dict(band=16, block_q=16, block_k=16, num_queries=50, num_keys=64)
        got = line_block_mask(none.to(DEVICE), none.to(DEVICE), **sizes)
        want = line_block_mask_reference(none, none, **sizes)
        assert got.shape == want.shape == (b, h, 4, 4) and got.dtype == torch.bool
        idx, count = line_block_lists(none.to(DEVICE), none.to(DEVICE), **sizes)
        assert idx.shape == (b, h, 4, 4) and count.shape == (b, h, 4)
