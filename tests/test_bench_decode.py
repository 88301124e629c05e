"""`attnsieve bench decode`: its cache and byte counts, on CPU (the timing needs a GPU)."""

import argparse

import pytest
import torch

from attnsieve.bench.decode import make_cache, random_pages, sparse_cases, tokens_read
from attnsieve.kernels.decode_reference import decode_reference


@pytest.mark.parametrize("n", [1000, 1024])
def test_cache_of_any_length(n):
    """A length that is not a multiple of the page size is a valid context: its paged cache holds
    the same tokens as the contiguous one SDPA reads, and the bytes count the tokens held."""
    torch.manual_seed(0)
    args = argparse.Namespace(heads=4, kv_heads=2, head_dim=32, page_size=16)
    c = make_cache(2, n, args, device="cpu")
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        c.q.float().unsqueeze(2), c.k.float(), c.v.float(), enable_gqa=True
    )[:, :, 0]
    out = decode_reference(c.q, **c.paged).float()
    assert float((out - sdpa).norm() / sdpa.norm()) < 1e-2  # bf16 output
    fp8 = decode_reference(c.q, **c.fp8).float()
    assert float((fp8 - sdpa).norm() / sdpa.norm()) < 0.1
    table = c.paged["page_table"]
    every = torch.arange(table.shape[-1]).expand_as(table).to(torch.int32)
    count = torch.full(table.shape[:2], table.shape[-1], dtype=torch.int32)
    assert tokens_read(every, count, c.paged["lengths"], 16) == n
    pages, count = random_pages(4)(c.q, c)
    read = tokens_read(pages, count, c.paged["lengths"], 16)
    last = table.shape[-1] - 1
    has_last = (pages == last).float().mean()  # heads whose pick holds the partial page
    assert read == pytest.approx(count[0, 0] * 16 - has_last * (last + 1) * 16 + has_last * n)


@pytest.mark.parametrize("keep, n, page_size", [(1, 256, 16), (16, 16, 16), (16, 200, 256)])
def test_a_budget_that_covers_every_page_reads_them_all(keep, n, page_size):
    """Quest returns None (dense) where its budget covers every page: the bench's Quest row
    failed on it with an AttributeError after the dense rows had been timed."""
    args = argparse.Namespace(heads=4, kv_heads=2, head_dim=32, page_size=page_size, keep=keep)
    c = make_cache(1, n, args, device="cpu")
    for case in sparse_cases(args):
        pages, count = case.select(c.q, c)
        assert tokens_read(pages, count, c.paged["lengths"], page_size) == n, case.name
        out = decode_reference(c.q, **c.paged, pages=pages, page_count=count)
        assert torch.equal(out, decode_reference(c.q, **c.paged)), case.name


def test_fp8_pools_are_laid_out_as_the_cache_lays_them_out():
    """The bench's FP8 pools match `Cache`'s: pages of (page_size, D) rows and per-token scales
    contiguous in (num_pages, page_size), so the kernel reads one scale's bytes, not a row's."""
    args = argparse.Namespace(heads=4, kv_heads=2, head_dim=32, page_size=16)
    c = make_cache(2, 100, args, device="cpu")
    n_pages = c.fp8["k_pages"].shape[0]
    for name in ("k_scale", "v_scale"):
        assert c.fp8[name].shape == (n_pages, 16)
        assert c.fp8[name].is_contiguous()
    assert all(c.fp8[name].is_contiguous() for name in ("k_pages", "v_pages"))


def test_plot_draws_each_batch_against_the_copy_bandwidth(monkeypatch, tmp_path):
    """One TB/s and one time panel per batch size, the copy bandwidth and 85 % of it drawn on the
    TB/s panels; rows that failed their check are not drawn."""
    from attnsieve.bench import decode

    panels = []
    monkeypatch.setattr(decode, "save_line_plots", lambda path, p, title: panels.extend(p))
    rows = [{"B": b, "L": n, "method": m, "status": "ok", "tbps": 3.0, "ms": 0.1}
            for b in (1, 8) for n in (1024, 2048) for m in ("sdpa", "dense bf16")]  # fmt: skip
    rows[0]["status"] = "mismatch"
    decode._plot(rows, tmp_path / "d.png", "cpu", 4.0)
    assert [p["title"] for p in panels] == ["batch 1", "batch 8"] * 2
    assert [p["ylabel"] for p in panels] == ["TB/s read"] * 2 + ["ms per layer step"] * 2
    assert list(panels[0]["hlines"].values()) == [4.0, pytest.approx(3.4)]
    assert "hlines" not in panels[2]
    assert panels[0]["series"]["sdpa"] == ([2048], [3.0])  # the failed row left out
    assert panels[1]["series"]["sdpa"] == ([1024, 2048], [3.0, 3.0])
