"""PyramidKV: SnapKV selection, budgets shrinking from lower to upper layers (arXiv 2406.02069)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnsieve.checks import check_float, check_int
from attnsieve.methods.kv.base import KVView, ScoredPolicy, window_tokens
from attnsieve.methods.kv.snapkv import snapkv_score


@dataclass
class PyramidKV(ScoredPolicy):
    """PyramidKV (Cai et al., arXiv 2406.02069), budgets of the official code (KVCache-Factory).

    Tokens are scored as SnapKV does (observation ``window`` 8, the official LongBench runs',
    max pooling ``kernel`` 7) and the window's own tokens are kept; the budget of the other tokens
    decreases arithmetically with the layer, from ``max`` at layer 0 to ``min`` at the last layer,
    so that its mean over the layers is the given budget ``c = budget - window``: ``min = c /
    beta`` (``beta`` 20) and ``max = 2c - min``. If ``max`` exceeds the tokens outside the window,
    it is clamped there and ``min`` raised to keep the mean, as in the code; and as in the code, a
    prompt shorter than ``2c`` tokens keeps ``budget`` in every layer (SnapKV), as does a budget at
    most the window or a model of one layer.

    Differences from the code: the schedule is computed per head from that head's length (heads
    are ragged here), so a head shorter than its layer budget keeps everything and the mean over
    layers is then below the budget. ``min`` and the steps between layers are not floored to whole
    tokens as the code's ``c // beta`` and integer steps are; each layer's budget is rounded to
    the nearest token at the end, so it can differ from the code's by a few tokens either way
    (the last layer's most). Periodic passes (``kv_interval``) after a first pass that clamped
    ``max`` grow the lower layers back towards the unclamped schedule while the upper ones keep
    the raised ``min``: the mean can end up to ``window / num_layers`` tokens a head above the
    budget. GQA query heads are averaged, as in `SnapKV`.
    """

    window: int = 8
    kernel: int = 7
    beta: float = 20.0

    name: ClassVar[str] = "pyramidkv"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("window", self.window, 1)
        check_int("kernel", self.kernel, 1)
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel: expected an odd int (centred pooling), got {self.kernel}")
        check_float("beta", self.beta, 1.0, math.inf)

    def targets(self, view: KVView) -> Tensor:
        if view.num_layers == 1:  # no pyramid to build: SnapKV
            return super().targets(view)
        mean = super().targets(view).double()  # the layer-mean budget of each head
        lengths = view.lengths.double()
        c = mean - self.window  # selected tokens outside the window
        lo = c / self.beta
        hi = torch.minimum(2 * c - lo, (lengths - self.window).clamp(min=0))
        lo = 2 * c - hi
        step = (hi - lo) / (view.num_layers - 1)
        layer = self.window + hi - view.layer * step
        # a budget within the window, or a prompt shorter than 2c (the code's test): SnapKV
        layer = torch.where((c > 0) & (lengths >= 2 * c), layer, mean)
        return torch.floor(layer + 0.5).long().clamp(min=0).minimum(view.lengths.long())

    def max_keep(self, max_len: int) -> int:
        return min(max_len, 2 * super().max_keep(max_len))  # layer 0 keeps at most 2c + window

    def score(self, view: KVView) -> Tensor:
        return snapkv_score(view, self.window, self.kernel)

    def always_kept(self, view: KVView, target: Tensor) -> Tensor:
        return window_tokens(view, self.window)
