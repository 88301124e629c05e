"""`attnsieve bench e2e --decode-steps N`: decode tokens/s of a patched model vs stock SDPA.

For each prompt length, batch size B and config, one prefill of a (B, L) batch (every row the same
prompt: this measures speed, not answers), then ``WARMUP_STEPS`` untimed greedy decode steps
(kernel compilation, autotuning) and N timed ones. Reported: decode tokens/s = B·N / seconds, ms
per step, and the KV cache after the steps: ``kv_mib``, what holds tokens (on attnsieve's paged
cache the pages heads hold, ceil(tokens / page_size) each, `Cache.memory_bytes`; else
2·layers·kv_heads·head_dim·tokens·B·itemsize); on the paged cache also ``kv_reserved_mib``, the
pages given to heads ahead of their tokens for CUDA-graph replays and not yet written
(`Cache.ahead_bytes`: `attnsieve.integrations.decode_graphs` reserves 256 tokens a head before a
capture; 0 where the steps run eagerly), and ``kv_pool_mib``, the page pools allocated, held,
reserved and free pages alike (`Cache.reserved_bytes`: the device memory the cache takes; None off
the paged cache), with tokens/s relative to the dense config
(the first one without a KV policy, decode selector or FP8 cache) and to stock transformers
("sdpa": DynamicCache, SDPA attention, no patch, eager steps) at the same length and batch:
``vs_sdpa`` of a row whose steps replay a CUDA graph is mostly the host time a graph saves, not
attention; ``vs_dense`` compares like with like. Each cell is one timed window of N steps.
The configs are `attnsieve eval`'s: every combination of --methods, --kv at each of --kv-ratio,
--decode at each of --decode-ratio and --precision (`attnsieve.eval.sweep_args.method_configs`).
With a KV policy the prompt is compressed once after the prefill; the timed steps include any
periodic compression and each step's page selection. On attnsieve's paged cache (every config with
--paged-cache) on CUDA the warm-up captures a CUDA graph of the decode step and the timed steps
replay it (unless --no-graphs; `attnsieve.integrations.decode_graphs`); each row records whether
they did. The first warm-up step is the check: its logits against SDPA's (``first_step_rel_err``);
where the dense config's exceed ``CHECK_REL_ERR`` (a broken paged cache or decode kernel), no row
of that length and batch gets ``vs_sdpa`` or ``vs_dense`` and the command exits 1. With
--paged-cache, an "attention-free" row decodes as the dense config does with attention replaced by
zeros (the cache still appends): the part of a step that no KV policy or decode selector removes,
so its ``vs_dense`` bounds their speed-up. JSON + PNG go to ``--out`` (as
e2e_decode_MODEL_LABELS.json/.png: `attnsieve.bench.e2e` names them), a table to stdout.

    attnsieve bench e2e --model smollm2 --rope-scale 5 --lengths 32k --decode-steps 64 \\
        --batch 1,8 --methods dense --kv none,snapkv,adakv --kv-ratio 0.25 --decode none,quest \\
        --decode-ratio 0.125
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import Tensor
from tqdm import tqdm

from attnsieve.bench.common import (
    environment,
    format_table,
    ints,
    rel_err,
    save_line_plots,
    write_json,
)
from attnsieve.bench.e2e_report import transformers_version
from attnsieve.bench.e2e_timing import CHECK_REL_ERR
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.integrations.decode_graphs import graph_handle
from attnsieve.integrations.generate import decode, dense_cache_bytes
from attnsieve.integrations.paged import PagedSession
from attnsieve.integrations.transformers import cache_keyword, output_cache

SDPA = "sdpa"
ATTENTION_FREE = "attention-free"
WARMUP_STEPS = 4
COLUMNS = ["length", "batch", "label", "ms_per_step", "tokens_per_s", "vs_dense", "vs_sdpa",
           "kv_mib", "kv_reserved_mib", "first_step_rel_err"]  # fmt: skip


def plan(args: argparse.Namespace) -> tuple[list[int], list[tuple[str, AttentionConfig]]]:
    """(batch sizes, (label, config) per config) of the command line; ValueError names a bad
    argument."""
    from attnsieve.eval.sweep_args import method_configs

    if args.decode_steps < 1:
        raise ValueError(f"--decode-steps: expected >= 1, got {args.decode_steps}")
    try:  # a batch given twice is one (it would be its own baseline)
        batches = ints(args.batch)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"--batch: {e}") from None
    if args.config is not None:
        raise ValueError("--config: not used with --decode-steps; give JSON files to --methods")
    if args.no_cost:  # the prefill is not timed; its layers plan as `attnsieve.patch` does
        raise ValueError("--no-cost: applies to time to first token, not --decode-steps")
    axes = argparse.Namespace(
        **vars(args), method_kwargs="{}", min_prefill_length=None, backend=None
    )
    configs = method_configs(axes, AttentionConfig.min_prefill_length)
    if args.paged_cache:
        configs = [
            (
                label if config.paged else f"{label}+paged",
                dataclasses.replace(config, paged_cache=True),
            )
            for label, config in configs
        ]
    return batches, configs


def run(
    model: Any,
    prompts: dict[int, Tensor],
    batches: list[int],
    configs: list[tuple[str, AttentionConfig]],
    steps: int,
    meta: dict[str, Any],
    paths: tuple[Path, Path],
    graphs: bool = True,
) -> int:
    """Time every (length, batch, config) cell, write the JSON and PNG ``paths`` and print a
    table. ``prompts`` maps each length to its (1, L) prompt ids; ``graphs`` is `patch`'s. The JSON
    is written after every cell (``"complete": false``, without the ratios to SDPA and dense, until
    the last), so a run cut short keeps the cells it finished."""
    started = time.perf_counter()
    dense = next((label for label, config in configs if not config.needs_paged_cache), None)
    dense_config = dict(configs).get(dense)
    # the bound is only a bound against a dense config that decodes the same way
    free = [(ATTENTION_FREE, dense_config)] if dense_config and dense_config.paged else []
    cells = [(n, b, c) for n in prompts for b in batches for c in [(SDPA, None), *configs, *free]]
    rows: list[dict[str, Any]] = []

    def result(complete: bool) -> dict[str, Any]:
        return {
            **meta,
            "complete": complete,
            "environment": {**environment(model.device), "transformers": transformers_version()},
            "decode_steps": steps,
            "warmup_steps": WARMUP_STEPS,
            "graphs": graphs,
            "dense_reference": dense,
            "configs": {label: config.to_dict() for label, config in configs},
            "results": rows,
            "wall_s": time.perf_counter() - started,
        }

    json_path, png_path = paths
    png_path.unlink(missing_ok=True)  # an earlier run's, beside this run's partial JSON
    write_json(json_path, result(False))
    for length, batch, (label, config) in tqdm(cells, desc="bench e2e decode", unit="cell"):
        if label == ATTENTION_FREE:
            attention = mock.patch.object(PagedSession, "_decode", _zeros)
        else:
            attention = contextlib.nullcontext()
        with attention:
            cell = time_decode(model, prompts[length].repeat(batch, 1), steps, config, graphs)
        logits = cell.pop("first_step_logits")
        if label == SDPA:  # every (length, batch) starts with it
            reference = logits
        cell["first_step_rel_err"] = rel_err(logits, reference)
        rows.append({"length": length, "batch": batch, "label": label, **cell})
        write_json(json_path, result(False))
    rate = {(r["length"], r["batch"], r["label"]): r["tokens_per_s"] for r in rows}
    error = {(r["length"], r["batch"], r["label"]): r["first_step_rel_err"] for r in rows}
    for row in rows:
        at = row["length"], row["batch"]
        # the dense config's first decode step must give SDPA's logits: the paged cache and the
        # decode kernel are sound, or no row of this length and batch gets a speed-up
        row["check"] = None if dense is None else bool(error[(*at, dense)] < CHECK_REL_ERR)
        speedups = row["check"] is not False
        row["vs_sdpa"] = row["tokens_per_s"] / rate[(*at, SDPA)] if speedups else None
        row["vs_dense"] = row["tokens_per_s"] / rate[(*at, dense)] if dense and speedups else None
    final = result(True)
    write_json(json_path, final)
    plot(final, png_path)
    print(format_table(rows, COLUMNS))
    print(f"wrote {json_path} and {png_path} in {final['wall_s']:.0f} s")
    return 1 if any(row["check"] is False for row in rows) else 0


def _zeros(session: PagedSession, layer: int, query: Tensor, scale: float | None) -> Tensor:
    """`PagedSession._decode` with attention that reads nothing: zeros (B, 1, H_q, D)."""
    b, h, _, d = query.shape
    return query.new_zeros(b, 1, h, d)


@torch.inference_mode()
def time_decode(
    model: Any, ids: Tensor, steps: int, config: AttentionConfig | None, graphs: bool = True
) -> dict:
    """Prefill ``ids`` (B, L) once under ``config`` (None: stock model; ``graphs`` is `patch`'s),
    then time ``steps`` greedy decode steps after ``WARMUP_STEPS`` untimed ones (on the paged
    cache, the warm-up captures the CUDA graph that the timed steps replay)."""
    handle = None if config is None else patch(model, config, graphs=graphs)
    try:
        paged = handle is not None and handle.config.paged
        cache = handle.new_cache() if paged else None
        key = cache_keyword(model)
        out = model(input_ids=ids, **{key: cache}, use_cache=True, logits_to_keep=1)
        if paged:
            handle.compress()  # what the first decode step would do, kept out of the timing
        token = out.logits[:, -1].argmax(-1)
        cache = output_cache(out)
        if graph_handle(model, cache) is not None:
            # pages for every step now, so that the graph the warm-up captures serves all the
            # timed steps (else past its own reservation the timed call reserves and captures)
            cache.finish_prefill()
            cache.cache.reserve(WARMUP_STEPS + steps)
        # the first warm-up step by hand: its logits are the cell's correctness check
        first = model(input_ids=token[:, None], **{key: cache}, use_cache=True, logits_to_keep=1)
        first_logits = first.logits[:, -1].float()
        token, cache = first_logits.argmax(-1), output_cache(first)
        warm, cache, _ = decode(model, token, cache, WARMUP_STEPS - 1)
        warm = warm or [token]
        del out, first
        graph = None if handle is None or handle.session is None else handle.session.decode_graph
        _, cache, seconds = decode(model, warm[-1], cache, steps)
        # the timed steps replayed the warm-up's graph, with no capture of their own
        replayed = graph is not None and handle.session.decode_graph is graph
        if paged:
            store = handle.session.paged
            kv_bytes, ahead, pool = (
                store.memory_bytes(),
                store.ahead_bytes(),
                store.reserved_bytes(),
            )
        else:
            kv_bytes = dense_cache_bytes(model, ids.numel() + ids.shape[0] * (WARMUP_STEPS + steps))
            ahead, pool = 0, None
    finally:
        if handle is not None:
            handle.remove()
    del cache, handle
    gc.collect()  # a paged session and its cache refer to each other: free them before the next
    if ids.is_cuda:
        torch.cuda.empty_cache()
    return {
        "config": None if config is None else config.to_dict(),
        "prompt_tokens": ids.shape[1],
        "seconds": seconds,
        "ms_per_step": seconds / steps * 1e3,
        "tokens_per_s": ids.shape[0] * steps / seconds,
        "kv_mib": kv_bytes / 2**20,
        "kv_reserved_mib": ahead / 2**20,
        "kv_pool_mib": None if pool is None else pool / 2**20,
        "graph_replayed": replayed,
        "first_step_logits": first_logits,  # popped by `run` once compared with SDPA's
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Decode tokens/s against batch size, one line per config, one panel per length."""
    rows = result["results"]
    panels = []
    for length in dict.fromkeys(r["length"] for r in rows):
        series: dict[str, tuple[list[int], list[float]]] = {}
        for r in rows:
            if r["length"] == length:
                xs, ys = series.setdefault(r["label"], ([], []))
                xs.append(r["batch"])
                ys.append(r["tokens_per_s"])
        panels.append({"series": series, "xlabel": "batch", "ylabel": "decode tokens/s",
                       "logx": True, "title": f"{length} tokens"})  # fmt: skip
    title = f"{result['model']['name']}, {result['decode_steps']} decode steps, "
    save_line_plots(path, panels, title + result["environment"]["device"])
