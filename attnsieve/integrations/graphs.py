"""CUDA graphs of a layer's plan + sparse attention, replayed where shapes repeat.

A planner issues tens to hundreds of small launches per layer; at SmolLM2's sizes their host-side
cost (Python and launch latency, ~5 ms a layer on an H200) exceeds the whole layer's dense
attention below ~32K tokens. Plans make no host synchronisation (DESIGN.md), so a layer's plan,
sparse attention and density can be captured once and replayed for later calls of the same shapes.

Per key (planner, scale, shapes and strides of q, k, v): the first call runs eagerly (it compiles
and autotunes the kernels); the second runs once more under ``torch.cuda.set_sync_debug_mode
("error")`` and, if nothing waited for the device, is captured; later calls copy q, k, v into the
graph's inputs, replay, and copy the output out. Work that synchronises (e.g. vertical_slash's
span packing) keeps running eagerly, with one warning per planner. Graphs of the same shapes share
their input / output buffers and one memory pool (they replay one at a time and their results are
copied out at once), so 30 layers of per-layer planners cost one set of buffers.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# (q, k, v, out) -> density: the eager work a graph captures; it writes its output into `out`
PlannedCall = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
MAX_SHAPES = 4  # shape signatures whose buffers and graphs are kept (least recently used first out)


def _signature(*tensors: Tensor) -> tuple:
    return tuple((t.shape, t.stride(), t.dtype, t.device) for t in tensors)


class _Buffers:
    """Static q, k, v, out and density of one shape signature, and the graphs that read them."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, out: Tensor) -> None:
        self.inputs = tuple(torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
                            for t in (q, k, v))  # fmt: skip
        self.out = torch.empty_strided(out.shape, out.stride(), dtype=out.dtype, device=out.device)
        self.density: Tensor | None = None  # the first check run's, so its dtype is the eager one
        self.graphs: dict[tuple, torch.cuda.CUDAGraph | None] = {}  # None: runs eagerly
        self.calls: dict[tuple, int] = {}

    def load(self, q: Tensor, k: Tensor, v: Tensor) -> None:
        for static, t in zip(self.inputs, (q, k, v), strict=True):
            static.copy_(t)


class PlanGraphs:
    """The captured plan + attention graphs of one patched model (lives on its patch handle)."""

    def __init__(self) -> None:
        self._buffers: OrderedDict[tuple, _Buffers] = OrderedDict()
        self._pool: Any = None
        self._warned: set[str] = set()

    def run(
        self, key: tuple, name: str, call: PlannedCall, q: Tensor, k: Tensor, v: Tensor, out: Tensor
    ) -> Tensor:
        """``call(q, k, v, out)``'s density, replayed from a graph once the key has been seen;
        ``key`` names everything besides the tensors' shapes that the work depends on."""
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if not q.is_cuda or grad or torch.cuda.is_current_stream_capturing():
            return call(q, k, v, out)  # a graph records no autograd; nested captures stay whole
        # buffers made under inference mode cannot be written outside it
        signature = (*_signature(q, k, v, out), torch.is_inference_mode_enabled())
        buffers = self._buffers.get(signature)
        if buffers is None:
            buffers = self._buffers[signature] = _Buffers(q, k, v, out)
            while len(self._buffers) > MAX_SHAPES:
                self._buffers.popitem(last=False)
        self._buffers.move_to_end(signature)
        calls = buffers.calls[key] = buffers.calls.get(key, 0) + 1
        graph = buffers.graphs.get(key)
        if calls == 1 or (calls > 2 and graph is None):
            return call(q, k, v, out)
        buffers.load(q, k, v)
        if calls == 2:
            if not self._capture(buffers, key, name, call):
                return call(q, k, v, out)
        else:
            graph.replay()
        out.copy_(buffers.out)
        return buffers.density.clone()

    def _capture(self, buffers: _Buffers, key: tuple, name: str, call: PlannedCall) -> bool:
        """Run ``call`` on the static buffers without any host synchronisation, then capture it;
        False (and an eager key from then on) if it synchronised."""
        buffers.graphs[key] = None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        mode = torch.cuda.get_sync_debug_mode()
        try:
            with torch.cuda.stream(side):
                torch.cuda.set_sync_debug_mode("error")
                density = call(*buffers.inputs, buffers.out)
        except RuntimeError as error:
            if name not in self._warned:
                self._warned.add(name)
                warnings.warn(
                    f"attnsieve: {name}'s plan waits for the GPU ({str(error).splitlines()[0]}), "
                    "so it cannot be captured in a CUDA graph; it runs eagerly",
                    stacklevel=3,
                )
            return False
        finally:
            torch.cuda.set_sync_debug_mode(mode)
            torch.cuda.current_stream().wait_stream(side)
        density.record_stream(torch.cuda.current_stream())  # made on `side`, read here
        if buffers.density is None:  # the eager dtype (float64 from Layout.density)
            buffers.density = density.clone()
        else:
            buffers.density.copy_(density)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # the capture only records: the eager run above produced this call's output
        with torch.cuda.graph(graph, pool=self._pool):
            density = call(*buffers.inputs, buffers.out)
            buffers.density.copy_(density)
        buffers.graphs[key] = graph
        return True

    @property
    def captured(self) -> int:
        """How many graphs are held (keys that replay rather than run eagerly)."""
        return sum(g is not None for b in self._buffers.values() for g in b.graphs.values())

    def clear(self) -> None:
        self._buffers.clear()
