"""CUDA graphs of a layer's plan + sparse attention, replayed where shapes repeat.

A planner issues tens to hundreds of small launches per layer; at SmolLM2's sizes their host-side
cost (Python and launch latency, ~5 ms a layer on an H200) exceeds the whole layer's dense
attention below ~32K tokens. Plans make no host synchronisation (`benchmarks/check_no_sync.py`
checks it), so a layer's plan, sparse attention and density can be captured once and replayed for
later calls of the same shapes.

Per key (planner, scale, shapes and strides of q, k, v): the first call runs eagerly (it compiles
and autotunes the kernels); the second runs once more under ``torch.cuda.set_sync_debug_mode
("error")`` and, if nothing waited for the device, is captured; later calls copy q, k, v into the
graph's inputs, replay, and copy the output out. Work that synchronises (e.g. vertical_slash's
index checks) or whose capture fails keeps running eagerly, with one warning per planner. Graphs
of the same shapes share their input / output buffers, and every graph of the handle one memory
pool (they replay one at a time and their results are copied out at once), so 30 layers of
per-layer planners cost one set of buffers; a shape left without a graph keeps none. The sync
debug mode is process-wide: another thread that synchronises during that one checking run gets
its error.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

# (q, k, v, out) -> density: the eager work a graph captures; it writes its output into `out`
PlannedCall = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
MAX_SHAPES = 4  # shape signatures whose buffers and graphs are kept (least recently used first out)


@contextlib.contextmanager
def forbid_host_sync() -> Iterator[None]:
    """Inside the block any CUDA operation that waits for the GPU raises a RuntimeError (torch's
    sync debug mode, process-wide; the previous mode comes back after)."""
    mode = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(mode)


def _signature(*tensors: Tensor) -> tuple:
    return tuple((t.shape, t.stride(), t.dtype, t.device) for t in tensors)


def _like(t: Tensor) -> Tensor:
    """An empty tensor with t's strides (the kernels compiled for them), unless t is a view into
    a larger storage (e.g. a static cache's prefix), which would allocate all of it."""
    if t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


class _Buffers:
    """Static q, k, v, out and density of one shape signature, and the graphs that read them."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, out: Tensor) -> None:
        self.inputs = tuple(_like(t) for t in (q, k, v))
        self.out = _like(out)
        # Layout.density's dtype, so replayed densities equal eager ones bit for bit
        self.density = torch.zeros((), dtype=torch.float64, device=out.device)
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}  # by key: the graphs captured

    def load(self, q: Tensor, k: Tensor, v: Tensor) -> None:
        for static, t in zip(self.inputs, (q, k, v), strict=True):
            static.copy_(t)


class PlanGraphs:
    """The captured plan + attention graphs of one patched model (lives on its patch handle)."""

    def __init__(self) -> None:
        self._buffers: OrderedDict[tuple, _Buffers] = OrderedDict()
        self._calls: dict[tuple, int] = {}
        self._pool: Any = None
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self.eager: set[str] = set()  # planners that could not be captured

    def run(
        self, key: tuple, name: str, call: PlannedCall, q: Tensor, k: Tensor, v: Tensor, out: Tensor
    ) -> Tensor:
        """``call(q, k, v, out)``'s density, replayed from a graph once the key has been seen;
        ``key`` names everything besides the tensors' shapes that the work depends on."""
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if not q.is_cuda or grad or name in self.eager or torch.cuda.is_current_stream_capturing():
            return call(q, k, v, out)  # a graph records no autograd; nested captures stay whole
        # buffers made under inference mode cannot be written outside it
        signature = (*_signature(q, k, v, out), torch.is_inference_mode_enabled())
        if len(self._calls) > 4 * MAX_SHAPES * 64:  # many one-off shapes (e.g. an eval sweep)
            self._calls = {c: n for c, n in self._calls.items() if n > 1}
        calls = self._calls[(signature, key)] = self._calls.get((signature, key), 0) + 1
        if calls == 1:  # compiles and autotunes; nothing is kept for a shape seen once
            return call(q, k, v, out)
        with torch.cuda.device(q.device):
            buffers = self._buffers.get(signature)
            graph = None if buffers is None else buffers.graphs.get(key)
            if graph is None:
                return self._capture(signature, key, name, call, q, k, v, out)
            self._buffers.move_to_end(signature)
            buffers.load(q, k, v)
            graph.replay()
            out.copy_(buffers.out)
            return buffers.density.clone()

    def _capture(
        self, signature: tuple, key: tuple, name: str, call: PlannedCall,
        q: Tensor, k: Tensor, v: Tensor, out: Tensor,
    ) -> Tensor:  # fmt: skip
        """Run ``call`` on the static buffers (this call's result), again without any host
        synchronisation, then capture it. A call that synchronises, or whose capture fails, runs
        eagerly from then on (its planner is `eager`); a shape left without a graph keeps no
        static copies, nor does one whose call raised (an out-of-memory error, say), which then
        captures at its next call."""
        buffers = self._buffers.get(signature)
        if buffers is None:
            buffers = self._buffers[signature] = _Buffers(q, k, v, out)
            while len(self._buffers) > MAX_SHAPES:
                self._buffers.popitem(last=False)
        self._buffers.move_to_end(signature)
        try:
            buffers.load(q, k, v)
            # first without the sync check: the buffers' strides may compile and autotune anew
            buffers.density.copy_(call(*buffers.inputs, buffers.out))
            out.copy_(buffers.out)
            result = buffers.density.clone()
            synced = not self._runs_without_sync(name, call, buffers)
            graph = None if synced else self._record(name, call, buffers)
        except BaseException:
            self._drop_unused(signature)
            raise
        if graph is None:
            self._drop_unused(signature)
        else:
            buffers.graphs[key] = graph
        return result

    def _record(self, name: str, call: PlannedCall, buffers: _Buffers) -> Any:
        """The graph of ``call`` on the buffers, or None (and the planner eager) if the capture
        failed."""
        device = buffers.out.device
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        if device not in self._streams:  # one capture stream per device, made once
            self._streams[device] = torch.cuda.Stream(device)
        stream = self._streams[device]
        try:  # the capture only records
            # the outer context puts the caller's stream back when the capture's end raises
            # (torch's graph context leaves its stream current then)
            with torch.cuda.stream(stream), torch.cuda.graph(graph, pool=self._pool, stream=stream):
                buffers.density.copy_(call(*buffers.inputs, buffers.out))
        except RuntimeError as error:
            self._give_up(name, error)
            torch.cuda.synchronize(device)
            return None
        return graph

    def _drop_unused(self, signature: tuple) -> None:
        """Free a shape's static copies where it holds no graph."""
        buffers = self._buffers.get(signature)
        if buffers is not None and not buffers.graphs:
            del self._buffers[signature]

    def _runs_without_sync(self, name: str, call: PlannedCall, buffers: _Buffers) -> bool:
        """Run ``call`` on the buffers on a side stream, where any wait for the GPU raises; False
        (and the planner marked eager) if one did."""
        side = torch.cuda.Stream(buffers.out.device)
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side), forbid_host_sync():
                call(*buffers.inputs, buffers.out)
        except RuntimeError as error:
            if "synchroniz" not in str(error):
                raise  # a real error (out of memory, a kernel's), not a host wait
            self._give_up(name, error)
            return False
        finally:
            torch.cuda.current_stream().wait_stream(side)
        return True

    def _give_up(self, name: str, error: Exception) -> None:
        if name not in self.eager:
            self.eager.add(name)
            warnings.warn(
                f"attnsieve: {name}'s plan cannot be captured in a CUDA graph "
                f"({str(error).splitlines()[0]}); it runs eagerly",
                stacklevel=4,
            )

    @property
    def captured(self) -> int:
        """How many graphs are held (keys that replay rather than run eagerly)."""
        return sum(len(b.graphs) for b in self._buffers.values())

    def clear(self) -> None:
        self._buffers.clear()
        self._calls.clear()
