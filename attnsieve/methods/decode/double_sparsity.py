"""Double Sparsity: top-k tokens from a few calibrated label channels (arXiv 2408.07092)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.checks import check_int, check_qk
from attnsieve.methods.decode.base import (
    DecodeSelector,
    Pages,
    PageView,
    StepState,
    check_query,
    pages_of,
    top_group_attention,
    warn_no_sparse_layer,
)


@dataclass
class DoubleSparsity(DecodeSelector):
    """Double Sparsity (Yang et al., arXiv 2408.07092).

    Token sparsity from channel sparsity: ``q . k`` is approximated on R label channels (the
    abstract's headline is 1/16 channel sparsity, D/16), chosen offline per head as the channels
    whose ``|q_d k_d|`` is largest (`calibrate_label_channels`); the cache keeps those channels of
    every key (the label cache, `PageView.labels`). The approximate scores pick each KV head's top
    ``budget_tokens`` tokens. The default ``ratio`` 1/16 is the paper's headline token sparsity. The
    first ``dense_layers`` (2) layers read every page, as the official evaluation code runs them
    (``modify_llama.py``). R has no default here; the official scripts use 64 (LongBench) or 32 (the
    README's example) of 128 channels.

    Differences from the paper: the cache is paged, so the step reads the pages holding the chosen
    tokens (and the current page): more tokens than the budget, at most ``page_size`` times more.
    GQA: one token set per KV head, which the paged cache reads (the authors' code selects tokens
    per query head): each query head's approximate scores go through the layer's softmax (scale
    1/sqrt(D): the labels stand for the whole ``q . k``) and the probabilities are summed over the
    group, as kvpress averages a group's attention, so that a token one query head attends to is
    kept even where the others' scores of it are low. Labels are stored at the cache's precision
    (the paper quantises them to 4 bits). ``channels`` (one list per KV head, from ``attnsieve
    calibrate --label-channels R``) are handed to the cache when a generation starts under
    `attnsieve.patch`, which refuses them first where they do not fit the model (`check_layer`:
    every layer past ``dense_layers`` needs them).
    """

    dense_layers: int = 2
    channels: Sequence[Sequence[int]] | None = None

    name: ClassVar[str] = "double_sparsity"
    default_budget_tokens: ClassVar[int | None] = None
    default_ratio: ClassVar[float | None] = 1 / 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("dense_layers", self.dense_layers, 0)
        if self.channels is None:
            return
        if (
            not isinstance(self.channels, (list, tuple))
            or not self.channels
            or not all(isinstance(c, (list, tuple)) and c for c in self.channels)
            or not all(type(i) is int and i >= 0 for c in self.channels for i in c)  # no bools
            or not all(list(c) == sorted(set(c)) for c in self.channels)
            or len({len(c) for c in self.channels}) != 1
        ):
            raise ValueError(
                "channels: expected one ascending list of R distinct channel indices per KV head "
                f"(as calibrate writes), got {self.channels!r}"
            )
        # kept as tuples, so that a frozen config's selector cannot be changed in place
        self.channels = tuple(tuple(c) for c in self.channels)

    def label_channels(self, device: torch.device | str) -> Tensor | None:
        """The calibrated channels as the cache takes them, int64 (H_kv, R), or None."""
        if self.channels is None:
            return None
        return torch.tensor(self.channels, dtype=torch.int64, device=device)

    def check_layer(
        self,
        layer: int,
        kv_heads: int | None,
        head_dim: int | None,
        num_layers: int | None = None,
    ) -> None:
        """A layer past ``dense_layers`` needs ``channels``, one list per KV head, each index
        below the head dimension; a warning where ``dense_layers`` covers the whole model."""
        super().check_layer(layer, kv_heads, head_dim, num_layers)
        warn_no_sparse_layer(
            "dense_layers", self.dense_layers, num_layers, "every layer reads every page"
        )
        if layer < self.dense_layers:
            return
        if self.channels is None:
            raise ValueError(
                f"channels: none given, but layer {layer} is past dense_layers="
                f"{self.dense_layers} (attnsieve calibrate --label-channels R writes them)"
            )
        if kv_heads is not None and len(self.channels) != kv_heads:
            raise ValueError(
                f"channels: {len(self.channels)} lists (one per KV head), but the model has "
                f"{kv_heads} KV heads"
            )
        top = max(c[-1] for c in self.channels)  # each list is ascending
        if head_dim is not None and top >= head_dim:
            raise ValueError(f"channels: index {top}, but the head dimension is {head_dim}")

    def select(self, q: Tensor, view: PageView, step: StepState) -> Pages | None:
        check_query(q, view, step)
        b, h, p = view.page_table.shape
        d = view.head_dim
        width = self.max_tokens(p * view.page_size)
        if view.layer < self.dense_layers or width >= p * view.page_size:
            return None
        if view.labels is None or view.label_channels is None:
            raise ValueError(
                f"view.labels: Double Sparsity needs the label cache of layer {view.layer} "
                "(calibrated label channels; see calibrate_label_channels)"
            )
        r = view.label_channels.shape[1]
        channels = view.label_channels[None, :, None, :].expand(b, h, q.shape[1] // h, r)
        q_label = q.float().view(b, h, -1, d).gather(-1, channels)  # (B, H, g, R)
        labels = view.labels.float().reshape(b, h, p * view.page_size, r)
        # each query head's approximate attention, summed over the group
        tokens = top_group_attention(q_label, labels, view, self.token_targets(view), width)
        return pages_of(tokens, view, width + 1)


def calibrate_label_channels(q_samples: Tensor, k_samples: Tensor, r: int) -> Tensor:
    """Offline calibration of the label channels: int64 (H_kv, r), ascending, from sample queries
    (B, H_q, N, D) and keys (B, H_kv, M, D) of one layer (after RoPE), N <= M, query i at the
    token of key M - N + i (bottom-right, as everywhere here).

    A channel's importance is the paper's "qk-outlier" statistic, per head as the paper defines
    it: the mean over tokens of ``|q_t,d k_t,d|``, each query with its own token's key. The
    official calibration (``offline_calibration.py``, its method 1) means to compute the same, but
    its reshape of (B, H, T, D) to (-1, H, D) mixes heads and tokens, and it keeps the last batch
    only; its scripts default to the query-only statistic. One label cache per KV head here, so
    the g query heads' importances are summed and each KV head keeps its r most important
    channels."""
    check_qk(q_samples, k_samples)
    d, n, m = q_samples.shape[-1], q_samples.shape[2], k_samples.shape[2]
    check_int("r", r, 1)
    if r > d:
        raise ValueError(f"r: expected at most head_dim={d}, got {r}")
    if n == 0 or n > m:
        raise ValueError(
            f"q_samples, k_samples: expected 1 <= N <= M (each query's own key), got N={n}, M={m}"
        )
    h = k_samples.shape[1]
    q = q_samples.float().unflatten(1, (h, -1))  # (B, H_kv, g, N, D)
    k = k_samples[:, :, m - n :].float()[:, :, None]  # (B, H_kv, 1, N, D): each query's own key
    importance = (q * k).abs().mean((0, 3)).sum(1)  # (H_kv, D)
    if not bool(torch.isfinite(importance).all()):  # topk would rank a NaN channel first
        raise ValueError(
            "q_samples, k_samples: expected finite values (a NaN or inf, or |q·k| overflows)"
        )
    return importance.topk(r, dim=-1).indices.sort(-1).values
