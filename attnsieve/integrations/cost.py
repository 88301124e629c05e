"""When sparse prefill pays for itself: a per-layer decision from measured kernel throughput.

Dense attention of a layer costs its FLOPs at SDPA's rate. A sparse prefill costs its plan (mostly
a fixed number of launches, so nearly constant in the prompt length) plus the sparse kernel at its
own rate times the density. A layer runs its planner (and the layout it plans) only when the
predicted plan + sparse time, at the layer's last density (a prior before its first plan), is
below dense; otherwise the dense path runs and the stats record the reason "cost". Every
precision is priced at the bf16 kernel's rate: the INT8·FP8 kernel gained little end to end on a
whole layout (1.03x SDPA for the `dense` planner on Llama-3-8B's shapes at 32K), nothing on
sparse ones at 10 % (1.00x the bf16 kernel), and on SmolLM2's 64-channel heads it ran at
0.94-0.98x cuDNN on a whole layout (benchmarks/results/h200/select/): a rate by precision alone
would send such heads to a slower kernel.

The default rates and planning times are the NVIDIA H200 measurements of `attnsieve bench kernels`
and `attnsieve bench prefill` (benchmarks/results/h200/: Llama-3-8B shapes, bf16, causal); rates
are read per head dim and planning time per planner, each at the first measured value at or above
(the last beyond them). At head dim 64 (SmolLM2's heads,
benchmarks/results/h200/w4/new2/kernels.json) cuDNN and the sparse kernel run at about the same
rate, 415-445 TFLOPS at 32K-128K; at 128 cuDNN leads, 570 against 480. A plan replayed from a CUDA
graph (`attnsieve.integrations.graphs`, the patch's default) costs only its GPU time: those times
come from `benchmarks/check_no_sync.py` (benchmarks/results/h200/planning2/no_sync.json, SmolLM2's
9 query heads) and scale with batch x query heads; a planner that cannot be captured
(vertical_slash) keeps its eager time. On another GPU, measure and pass your own.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from attnsieve.checks import check_float, check_int
from attnsieve.layout_counts import causal_pairs

# plan ms per planner at 16K / 64K / 128K tokens (bench prefill, H200, 32 query heads), from
# benchmarks/results/h200/prefill.json; flexprefill's from the earlier run of its block-slash plan
# (benchmarks/results/h200/baseline/prefill.json): the span plan measured 6.0 / 8.3 / 24.8;
# vertical_slash's with its rows built by the Triton kernel attnsieve.kernels.line_rows
# (vs22/llama/prefill.json, the times ttft22/ ran with; the reviewed kernel measured 2.04 / 2.71 /
# 3.85 in vs22/final/; 7.89 / 24.17 / 68.69 with row sorts, 3.89 / 7.25 / 14.6 with
# Layout.from_lines' tensor ops)
_LENGTHS = (16384, 65536, 131072)
_PLAN_MS = {
    "dense": (0.30, 0.24, 0.22),
    "streaming": (0.38, 0.74, 0.88),
    "power": (0.50, 0.84, 1.21),
    "hip": (1.77, 3.31, 4.92),
    "flexprefill": (4.98, 5.25, 6.16),
    "xattention": (1.47, 10.89, 42.78),
    "vertical_slash": (3.09, 3.51, 4.12),
    "block_topk": (2.82, 7.23, 17.39),
}
# graph-replayed plan ms at 8K / 32K / 128K on SmolLM2's shapes (9 query / 3 KV heads, d 64),
# benchmarks/results/h200/planning2/no_sync.json (the threshold search and the planning kernels of
# 2026-11-30's third session); flexprefill's from select/no_sync_new/no_sync.json (its pooled map
# on the Triton kernel, 2026-12-01)
_GRAPH_LENGTHS = (8192, 32768, 131072)
_GRAPH_HEADS = 9
_GRAPH_PLAN_MS = {
    "dense": (0.04, 0.05, 0.09),
    "streaming": (0.07, 0.08, 0.12),
    "power": (0.08, 0.10, 0.15),
    "hip": (0.29, 0.45, 1.14),
    "flexprefill": (0.27, 0.52, 1.85),
    "xattention": (0.18, 0.50, 5.47),
    "block_topk": (0.28, 0.71, 3.16),
}
# the fraction of the sparse kernel's block rate a planner's layouts run at: vertical_slash's
# spans and gathered columns, 0.65 on SmolLM2's heads at 128K (22.8 ms at density 0.324,
# vs22/smollm2/) and 0.70-0.74 on Llama-3-8B's at 16K-128K (vs22/llama/)
_LAYOUT_RATE = {"vertical_slash": 0.65}


@dataclass(frozen=True)
class CostModel:
    """Predicted milliseconds of a layer's prefill attention, dense vs planned.

    Args:
        dense_tflops: SDPA's causal throughput (cuDNN, bf16) by head dim.
        sparse_tflops: the Triton kernel's throughput on the pairs it computes, by head dim.
            A head dim between two measured ones takes the larger one's rate (beyond the
            largest, the largest's).
        call_ms: fixed cost of one sparse attention call (launch, layout reads).
        plan_ms: per planner, eager planning milliseconds at the lengths ``plan_lengths``,
            read as measured whatever the batch and heads (see `planning_ms`).
        graph_plan_ms: per planner, planning milliseconds replayed from a CUDA graph at the
            lengths ``graph_plan_lengths`` for ``graph_plan_heads`` query heads (batch 1).
        layout_rate: per planner, the fraction of ``sparse_tflops`` its layouts run at (1 for
            a planner not listed).
        prior_density: density assumed for a layer before it has been planned once.
    """

    dense_tflops: Mapping[int, float] = field(default_factory=lambda: {64: 430.0, 128: 570.0})
    sparse_tflops: Mapping[int, float] = field(default_factory=lambda: {64: 430.0, 128: 480.0})
    call_ms: float = 0.05
    plan_ms: Mapping[str, tuple[float, ...]] = field(default_factory=lambda: dict(_PLAN_MS))
    plan_lengths: tuple[int, ...] = _LENGTHS
    graph_plan_ms: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: dict(_GRAPH_PLAN_MS)
    )
    graph_plan_lengths: tuple[int, ...] = _GRAPH_LENGTHS
    graph_plan_heads: int = _GRAPH_HEADS
    layout_rate: Mapping[str, float] = field(default_factory=lambda: dict(_LAYOUT_RATE))
    prior_density: float = 0.3

    def __post_init__(self) -> None:
        for name in ("dense_tflops", "sparse_tflops"):
            rates = getattr(self, name)
            if not isinstance(rates, Mapping) or not rates:
                raise TypeError(f"{name}: expected a mapping head dim -> TFLOPS, got {rates!r}")
            for head_dim, rate in rates.items():
                check_int(f"{name} head dim", head_dim, 1)
                check_float(f"{name}[{head_dim}]", rate, 1e-6, 1e6)
        check_float("call_ms", self.call_ms, 0.0, 1e6)
        if not isinstance(self.layout_rate, Mapping):
            raise TypeError(f"layout_rate: expected a mapping planner -> fraction, got "
                            f"{self.layout_rate!r}")  # fmt: skip
        for planner, fraction in self.layout_rate.items():
            check_float(f"layout_rate[{planner!r}]", fraction, 1e-6, 1.0)
        check_float("prior_density", self.prior_density, 0.0, 1.0)
        check_int("graph_plan_heads", self.graph_plan_heads, 1)
        for times, lengths in (
            ("plan_ms", "plan_lengths"),
            ("graph_plan_ms", "graph_plan_lengths"),
        ):
            _check_table(times, getattr(self, times), lengths, getattr(self, lengths))

    def dense_ms(self, batch: int, heads: int, n: int, m: int, head_dim: int) -> float:
        return _ms(_flops(batch, heads, n, m, head_dim), _rate(self.dense_tflops, head_dim))

    def sparse_ms(
        self,
        density: float,
        batch: int,
        heads: int,
        n: int,
        m: int,
        head_dim: int,
        planner: str | None = None,
    ) -> float:
        """The sparse kernel on ``planner``'s layout (None: a block layout) at ``density``."""
        flops = density * _flops(batch, heads, n, m, head_dim)
        return self.call_ms + _ms(flops, self._sparse_rate(planner, head_dim))

    def _sparse_rate(self, planner: str | None, head_dim: int) -> float:
        return _rate(self.sparse_tflops, head_dim) * self.layout_rate.get(planner, 1.0)

    def planning_ms(self, planner: str, n: int, graphed_heads: int | None = None) -> float:
        """Planning time of ``planner`` at ``n`` tokens, read at the first measured length at or
        above ``n`` (the last beyond them; unknown planners, e.g. per-head mixes, cost the
        slowest measured planner's at that length, eagerly: a per-head mix makes a plan a head,
        so this is a floor on its eager time). With ``graphed_heads`` (batch x query heads of a plan
        replayed from a CUDA graph), the graph time scaled linearly to those heads where one was
        measured, if below the eager time (linear scaling overstates many heads). The eager
        time is read unscaled: much of it is launches, which do not grow with the heads
        (vertical_slash at 128K: 2.73 ms on 9 query heads, 4.12 on 32; vs22/ on the H200).
        Scaled linearly, SmolLM2's eager flexprefill plan would be priced to pay at 32K, where
        it loses end to end."""
        at = _at(self.plan_lengths, n)
        known = self.plan_ms.get(planner)
        eager_ms = known[at] if known else max(times[at] for times in self.plan_ms.values())
        if graphed_heads is None or planner not in self.graph_plan_ms:
            return eager_ms
        graphed = self.graph_plan_ms[planner][_at(self.graph_plan_lengths, n)]
        return min(eager_ms, graphed * graphed_heads / self.graph_plan_heads)

    def break_even_density(
        self,
        planner: str,
        batch: int,
        heads: int,
        n: int,
        m: int,
        head_dim: int,
        graphed: bool = False,
    ) -> float:
        """The density below which planning + the sparse kernel is predicted to beat dense (at
        most 0 where the plan alone costs more). ``graphed``: the plan replays from a CUDA graph."""
        shape = (batch, heads, n, m, head_dim)
        plan = self.planning_ms(planner, n, batch * heads if graphed else None)
        spare = self.dense_ms(*shape) - plan - self.call_ms
        return spare / _ms(_flops(*shape), self._sparse_rate(planner, head_dim))

    def plan_pays(
        self,
        planner: str,
        density: float | None,
        batch: int,
        heads: int,
        n: int,
        m: int,
        head_dim: int,
        graphed: bool = False,
    ) -> bool:
        """Before planning: is plan + sparse (at ``density``, the layer's last, or the prior)
        predicted to beat dense?"""
        density = self.prior_density if density is None else density
        shape = (batch, heads, n, m, head_dim)
        return density < self.break_even_density(planner, *shape, graphed=graphed)


def _at(lengths: tuple[int, ...], n: int) -> int:
    return min(bisect.bisect_left(lengths, n), len(lengths) - 1)


def _rate(rates: Mapping[int, float], head_dim: int) -> float:
    dims = sorted(rates)
    return rates[dims[_at(tuple(dims), head_dim)]]


def _flops(batch: int, heads: int, n: int, m: int, head_dim: int) -> float:
    return 4.0 * batch * heads * head_dim * causal_pairs(n, m)  # Q·Kᵀ and P·V, 2 FLOPs each


def _ms(flops: float, tflops: float) -> float:
    return flops / (tflops * 1e9)


def _check_table(name: str, table: object, lengths_name: str, lengths: object) -> None:
    """A planning-time table: per planner, one time (ms >= 0) for each of ``lengths`` (ascending
    token counts), which it is read at; it failed inside a forward otherwise (IndexError)."""
    if not isinstance(lengths, tuple) or not lengths:
        raise TypeError(f"{lengths_name}: expected a non-empty tuple of lengths, got {lengths!r}")
    for i, n in enumerate(lengths):
        check_int(f"{lengths_name}[{i}]", n, 1)
    if list(lengths) != sorted(set(lengths)):
        raise ValueError(f"{lengths_name}: expected ascending lengths, got {lengths}")
    if not isinstance(table, Mapping):
        raise TypeError(f"{name}: expected a mapping planner -> times, got {table!r}")
    for planner, times in table.items():
        if not isinstance(times, (tuple, list)) or len(times) != len(lengths):
            raise ValueError(
                f"{name}[{planner!r}]: expected {len(lengths)} times (one per {lengths_name}), "
                f"got {times!r}"
            )
        for t in times:
            check_float(f"{name}[{planner!r}]", t, 0.0, math.inf)
