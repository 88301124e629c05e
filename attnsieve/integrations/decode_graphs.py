"""Whole decode steps on the paged cache, captured once as a CUDA graph and replayed.

A decode step of a small model is almost all host time: on the H200, SmolLM2 at 32K took 17 ms a
step at batch 1 and 19 ms at batch 8 (benchmarks/results/h200/SESSIONS.md, "Decode speed on
SmolLM2"), for a cache of 0.75 GB a row that the GPU reads in a fraction of a millisecond. On
attnsieve's paged cache every step has the same shapes, and the device holds all that a step
reads (lengths, page tables, positions), so the whole step is captured once: the model's forward
for one token per row, its greedy argmax written back as the next input, and the position bump.
Later steps replay it; the host's share of a step is one replay.

What makes a step replayable:

- `Cache.reserve` gives every head its pages for the steps ahead before the capture: inside the
  graph nothing allocates, and no pool or page table grows (the graph keeps their addresses).
- Positions come from a device tensor the graph bumps (``position_ids``), never from the cache's
  host counter; the cache's host mirrors, which the capture advanced without the device work,
  are restored after it and advanced once by the replayed steps at the end.
- The graph is valid while the cache's ``version`` is the one captured: a compaction, a pool or
  table growth, or a reset makes the next call capture again.

With periodic compression (``kv_interval``) the steps between two passes replay: a pass needs the
host (scores, compaction), so the step that makes one runs eagerly, as do the steps while the
window of recent queries a pass reads still grows; after the compaction the next step is an eager
warm-up and the one after it a new capture, with pages reserved for the steps before the next
pass only. Steps that need the host each step run eagerly throughout: layers kept whole
(soft-capping, sliding windows), and anything whose capture fails (warned once).
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Collection
from typing import Any

import torch
from torch import Tensor

RESERVE_STEPS = 256  # tokens per head reserved per capture: one capture serves this many steps
EAGER_KEY = "decode steps"  # in `PlanGraphs.eager` once a capture failed: decode stays eager


def at_eos(token: Tensor, eos_ids: Collection[int]) -> bool:
    """Whether greedy decoding stops before the next step: a batch of one whose last token is in
    ``eos_ids`` (a host read; a larger batch, or no ``eos_ids``, never stops early)."""
    return bool(eos_ids) and token.numel() == 1 and int(token) in eos_ids


class DecodeGraph:
    """One captured decode step of a patched model on its session's paged cache."""

    def __init__(self, model: Any, cache: Any, keyword: str, token: Tensor, stream: Any) -> None:
        """Capture the step that follows ``token`` (B,) on ``stream``, where an eager step of the
        same shapes has just run (it compiled and loaded every kernel: nothing may load inside a
        capture), on a cache whose pages are reserved for the steps ahead."""
        self.cache, paged = cache, cache.cache
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            self.ids = token[:, None].clone()
            self.positions = paged.layers[0].next_pos[:, None].clone()
            # transformers releases that still take cache_position get it from the same tensor
            where = {"position_ids": self.positions}
            if "cache_position" in inspect.signature(model.forward).parameters:
                where["cache_position"] = self.positions[0]
            host, steps = paged.host_state(), cache.reader.step_counters()
            try:
                with torch.cuda.graph(self.graph, stream=stream):
                    out = model(input_ids=self.ids, **where, **{keyword: cache}, use_cache=True)
                    self.ids.copy_(out.logits[:, -1].argmax(-1, keepdim=True))
                    self.positions.add_(1)
            finally:
                paged.set_host_state(host)
                # the capture ran the step's host code, not the step
                cache.reader.set_step_counters(steps)
        torch.cuda.current_stream(token.device).wait_stream(stream)
        self.version = paged.version

    def valid(self, cache: Any, steps: int) -> bool:
        """Whether this graph can run ``steps`` more steps on ``cache`` as it stands: the same
        pools and tables, and pages for every step (eager calls in between may have used some)."""
        paged = cache.cache
        return (
            cache is self.cache
            and paged.version == self.version
            and steps <= paged.reserved_tokens()
        )

    def run(self, token: Tensor, steps: int, eos_ids: Collection[int]) -> list[Tensor]:
        """Replay up to ``steps`` steps after ``token`` (B,): the new tokens (see `decode`)."""
        paged = self.cache.cache
        self.ids.copy_(token[:, None])
        self.positions.copy_(paged.layers[0].next_pos[:, None])
        tokens = []
        for _ in range(steps):
            if at_eos(self.ids, eos_ids):
                break
            self.graph.replay()
            tokens.append(self.ids[:, 0].clone())
        paged.advance_host(len(tokens))
        self.cache.reader.advance_steps(len(tokens))
        return tokens


def graph_handle(model: Any, cache: Any) -> Any:
    """The patch handle whose session `decode` replays on ``cache`` from a CUDA graph, or None
    where graphs do not apply: ``cache`` must be the paged cache of ``model``'s patch handle
    (created with ``graphs=True``), on CUDA, with no layer kept whole and no failed capture."""
    from attnsieve.integrations.transformers import handle_of

    handle = handle_of(model)
    if handle is None or handle.graphs is None or handle.session is None:
        return None
    session = handle.session
    applies = (
        session.cache is cache
        and session.paged is not None
        and session.paged.device.type == "cuda"
        and not session.whole
        and EAGER_KEY not in handle.graphs.eager
    )
    return handle if applies else None


@torch.inference_mode()
def decode(
    model: Any,
    handle: Any,
    token: Tensor,
    cache: Any,
    steps: int,
    eos_ids: Collection[int],
    keyword: str,
) -> tuple[list[Tensor], Any, float]:
    """`attnsieve.integrations.generate.decode` on a cache whose `graph_handle` is ``handle``:
    the same greedy tokens, replayed from a CUDA graph that lives on the handle's session. When
    there is no graph that fits, any pending compression runs, pages are reserved, one eager step
    runs on a side stream (the warm-up a capture needs, on the shapes the graph will see) and the
    next step is captured; if the capture fails, the rest runs eagerly (a failed capture can leave
    PyTorch's CUDA random generator unusable in this process: a failure is a bug to report). With
    ``kv_interval``, a step that makes a periodic pass runs eagerly, and so does each step while
    the window of recent queries grows (`PagedSession.free_steps`, `windows_full`)."""
    session = handle.session
    tokens: list[Tensor] = []
    torch.cuda.synchronize(token.device)
    start = time.perf_counter()
    while steps and not at_eos(token, eos_ids):
        free = session.free_steps()
        chunk = steps if free is None else min(steps, free)
        graph = session.decode_graph
        fits = graph is not None and graph.valid(cache, chunk)
        # the host runs a step that makes a pass, a step while the query window fills, and a lone
        # step that no graph fits (after its warm-up, a capture would replay nothing)
        filling = free is not None and not session.windows_full()
        if not chunk or filling or (chunk == 1 and not fits):
            token = _step(model, token, cache, keyword)
            tokens.append(token)
            steps -= 1
            continue
        if not fits:
            session.drop_decode_graph()  # its memory goes before a new capture, not in a GC pass
            # the cache takes the shapes the graph will see before the warm-up step: compressed,
            # and with every page of the steps ahead (a step after reserve reads wider page lists):
            # with kv_interval, those before the next pass, whose compaction ends the graph
            cache.finish_prefill()
            cache.cache.reserve(max(steps, RESERVE_STEPS) if free is None else chunk)
            stream = torch.cuda.Stream(device=token.device)
            stream.wait_stream(torch.cuda.current_stream(token.device))
            with torch.cuda.stream(stream):
                token = _step(model, token, cache, keyword)
            torch.cuda.current_stream(token.device).wait_stream(stream)
            tokens.append(token)
            steps, chunk = steps - 1, chunk - 1  # chunk >= 1 left: a lone step ran above
            if at_eos(token, eos_ids):
                break
            try:
                graph = DecodeGraph(model, cache, keyword, token, stream)
            except RuntimeError as e:  # e.g. an operation that waits for the GPU
                handle.graphs.eager.add(EAGER_KEY)
                warnings.warn(
                    f"attnsieve: a decode step cannot be captured in a CUDA graph ({e}); "
                    "decode steps run eagerly",
                    stacklevel=3,
                )
                from attnsieve.integrations import generate  # it imports this module

                tokens += generate.decode(model, token, cache, steps, eos_ids)[0]
                break
            session.decode_graph = graph
        replayed = graph.run(token, chunk, eos_ids)
        if not replayed:  # ``token`` ends the sequence
            break
        tokens += replayed
        steps -= len(replayed)
        token = replayed[-1]
    torch.cuda.synchronize(token.device)
    return tokens, cache, time.perf_counter() - start


def _step(model: Any, token: Tensor, cache: Any, keyword: str) -> Tensor:
    """One eager greedy step after ``token`` (B,): the next token."""
    out = model(input_ids=token[:, None], **{keyword: cache}, use_cache=True)
    return out.logits[:, -1].argmax(-1)
