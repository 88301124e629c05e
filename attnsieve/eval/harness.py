"""`attnsieve eval`: what each method costs in task accuracy and buys in time and memory.

The sweep axes are the prefill planner (``--methods``), the KV policy (``--kv`` at each of
``--kv-ratio``), the decode selector (``--decode`` at each of ``--decode-ratio``) and
``--precision``;
for every combination, length and task the same seeded samples (`attnsieve.eval.tasks`) run
through prefill + greedy decoding under ``attnsieve.patch``. A cell of length L holds prompt and
answer within L tokens, as RULER counts them: the prompt fits L less the new tokens its answer is
given (`attnsieve.eval.tasks.answer_budget`: the target's tokens + 8, 15-48 on SmolLM2). Cells
measured before this rule had prompts of up to L tokens; their resume keys differ, so they run
again. With a KV policy the protocol is kvpress's: the context is prefilled and compressed, then
the question is prefilled uncompressed, so a policy that looks at the last queries (SnapKV) never
sees the question. ``--question-in-window`` compresses after the question instead, as SnapKV's
paper evaluates it (the observation window holds the question's queries); the cells with a KV
policy then have resume keys of their own. Accuracy, mean layout density, prefill time, decode
tokens/s, KV-cache memory (held after the answer; the dense cache's size without a paged cache) and
peak memory are recorded. Each finished cell is appended to
OUT/cells.jsonl and skipped when the command runs again, so an interrupted sweep resumes. Then
OUT/results.json, OUT/results.csv and the plots are written: accuracy vs length, accuracy vs
prefill speed-up over dense (needs ``dense``), accuracy vs KV memory, and accuracy vs budget
ratio where ``--kv-ratio`` or ``--decode-ratio`` lists several (one config each). The printed
summary pairs each cell with the ``dense`` cell of its length and task, sample by sample
(`paired_difference`). The options, the lengths and the (label, config) per method combination
they name come from `attnsieve.eval.sweep_args`.

Methods run as planned: `attnsieve.patch`'s cost model, which sends a layer to dense attention
where planning would not pay for itself on the GPU, is off here, so a cell's accuracy is its
method's own (``attnsieve bench e2e`` times the patched model with the cost model on).

``--fidelity`` instead (`attnsieve.eval.model_fidelity`) runs one prompt of one task (``--tasks``
names one; default niah_single, and ``--samples`` is refused) at ``--fidelity-length`` through
the dense model, captures Q/K/V of every layer through transformers' AttentionInterface, and
reports each method's attention recall and relative output error and cosine per layer and head
(OUT/fidelity.json, OUT/fidelity.png). Nothing is generated there, so the prompt takes up to the
whole length. A method at ``int8-fp8`` precision is compared with the float32 reference of dense
attention (the others with dense attention at the model's precision); its layers without a
planner run SDPA at the model's precision, as patched, and are measured so.
It also reports each method's relative error of the last position's logits against the stock model
(``logit_rel_err``), the KL divergence from the stock model's next-token distribution (``logit_kl``,
nats) and whether their top token agrees (``top1_agrees``). "as_patched" gives recall and density of
what `attnsieve.patch` runs by default: a prompt shorter than the config's ``min_prefill_length``
runs dense, and on a GPU its cost model sends a layer whose plan (this density) would not pay for
itself to dense attention, which recalls everything. It measures prefill only: a method with a KV
policy, a decode selector or an FP8 KV cache (``--kv``, ``--decode``, ``fp8-kv`` or a config file's)
is refused there.

    attnsieve eval --model probe --methods dense,streaming,flexprefill --lengths 4k,8k,16k
"""

from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import json
import os
import resource
import statistics
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from attnsieve.bench.common import check_out, environment, replace_file, write_json
from attnsieve.eval.model_fidelity import check_prefill_only, run_fidelity
from attnsieve.eval.models import (
    load_model,
    load_tokenizer,  # noqa: F401 (re-exported)
    model_text_config,
    resolve_dtype,
    smollm2_path,
    spec_tokenizer,
)
from attnsieve.eval.probe import weights_dir
from attnsieve.eval.sweep_args import (
    DEFAULT_LENGTHS,
    add_arguments,  # noqa: F401 (the command's options, as cli.COMMANDS expects)
    check_configs_fit,
    check_lengths_fit,
    entries,
    method_configs,
    parse_length,
    repeated,
    split,
    within_positions,
)
from attnsieve.eval.tasks import (
    TASKS,
    TASKS_VERSION,
    LengthTooShortError,
    Sample,
    answer_budget,
    check_length,
    make_samples,
    prefill_sample,
)
from attnsieve.integrations.generate import dense_cache_bytes, eos_token_ids
from attnsieve.integrations.generate import generate as run_generate

CSV_COLUMNS = [
    "model",
    "method",
    "length",
    "task",
    "samples",
    "seed",
    "accuracy",
    "density",
    "prefill_seconds",
    "prefill_seconds_median",
    "decode_tokens_per_s",
    "kv_memory_mib",
    "peak_memory_mib",
    "memory_kind",
    "mean_prompt_tokens",
    "device",
    "finished_at",
]


def split_question(prompt: str) -> tuple[str, str]:
    """(context, question) of a task prompt: the question starts at its last line beginning with
    "What" or "Question:" (every task's template ends so); no such line: all context."""
    cut = max(prompt.rfind("\nWhat "), prompt.rfind("\nQuestion:"))
    return (prompt, "") if cut < 0 else (prompt[:cut], prompt[cut:])


def generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    handle: Any,
    question_in_window: bool = False,
) -> tuple[str, float, float, int, list[float]]:
    """Greedy continuation of ``prompt`` under the patch ``handle`` (stops at EOS, which is left
    out): (text, seconds to first token, decode tokens/s, KV-cache bytes held at the end, each
    layer's density over the whole prompt: context and question).

    The prompt runs in one chunk; with a paged cache (a KV policy, a decode selector or FP8 KV)
    the context is compressed before the question is prefilled, or with ``question_in_window``
    the whole prompt after it (see the module docstring)."""
    ids = torch.tensor([list(tokenizer.encode(prompt))], device=model.device)
    eos = eos_token_ids(model, tokenizer)
    cache, context = None, None
    if handle.config.paged:
        cache = handle.new_cache()
        if not question_in_window:
            context = len(tokenizer.encode(split_question(prompt)[0]))
    tokens, ttft, decode_s, density = run_generate(
        model, ids, max_new_tokens, ids.shape[1], eos, handle.stats, cache, context,
        handle.compress if cache is not None else None,
    )  # fmt: skip
    rate = (len(tokens) - 1) / decode_s if len(tokens) > 1 and decode_s > 0 else float("nan")
    if cache is not None:
        kv_bytes = handle.session.paged.memory_bytes()
    else:
        kv_bytes = dense_cache_bytes(model, ids.shape[1] + len(tokens) - 1)
    if tokens[-1] in eos:
        tokens = tokens[:-1]
    return tokenizer.decode(tokens, skip_special_tokens=True), ttft, rate, kv_bytes, density


class PeakMemory:
    """Peak memory of a span: CUDA max allocated on GPU; on CPU the peak RSS (VmHWM), reset through
    /proc/self/clear_refs where Linux allows it, else the process-lifetime peak."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_peak"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "rss_peak_process_lifetime"

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.kind == "rss_peak":
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_window(args: argparse.Namespace, config: Any) -> bool:
    """Whether ``config``'s cells compress after the question (--question-in-window, and a KV
    policy to compress with)."""
    return args.question_in_window and config.has_kv_policy


def run_cell(
    model: Any,
    tokenizer: Any,
    samples: list[Sample],
    config: Any,
    bar: tqdm,
    question_in_window: bool = False,
) -> dict:
    """Accuracy, density, prefill and decode time and memory of one method on ``samples``
    (``question_in_window``: see `generate`)."""
    from attnsieve.integrations import patch

    memory = PeakMemory(model.device)
    scores, predictions, seconds, rates, kv, densities, layers, peaks = ([] for _ in range(8))
    handle = patch(model, config, cost=None)
    with handle:
        if model.device.type == "cuda":  # the CPU compiles and tunes nothing: no warm-up there
            generate(model, tokenizer, samples[0].prompt, 2, handle)
        for sample in samples:
            memory.reset()
            budget = answer_budget(tokenizer, sample.target)
            text, prefill, rate, kv_bytes, density = generate(
                model, tokenizer, sample.prompt, budget, handle, question_in_window
            )
            peaks.append(memory.peak_mb())
            scores.append(sample.score(text))
            predictions.append(text[:200])
            seconds.append(prefill)
            rates.append(rate)
            kv.append(kv_bytes / 2**20)
            layers.append(density)
            densities.append(statistics.fmean(density))
            bar.update(1)
    finite_rates = [r for r in rates if r == r]
    return {
        "accuracy": statistics.fmean(scores),
        "scores": scores,
        "predictions": predictions,
        "density": statistics.fmean(densities) if densities else None,
        "density_per_layer": [statistics.fmean(c) for c in zip(*layers, strict=True)]
        if layers
        else None,
        "prefill_seconds": statistics.fmean(seconds),
        "prefill_seconds_median": statistics.median(seconds),
        "decode_tokens_per_s": statistics.median(finite_rates) if finite_rates else None,
        "kv_memory_mib": statistics.fmean(kv),
        "peak_memory_mib": max(peaks),
        "memory_kind": memory.kind,
        "mean_prompt_tokens": statistics.fmean(s.num_tokens for s in samples),
    }


# what the summary, the tables and the plots read of a finished cell
_CELL_FIELDS = (
    "key", "method", "length", "task", "accuracy", "scores", "density", "prefill_seconds",
    "kv_memory_mib",
)  # fmt: skip


def _read_jsonl(path: Path, keys: Collection[str] | None = None) -> list[dict]:
    """The finished cells (of ``keys`` where given). A line cut short (a run killed while writing
    it) is left out, and removed from the file's end, where the next cell would be appended to
    it; a line that is not a cell (edited, or another program's) is refused by file and line. A
    cell of another key is left out unread: one of an older version lacks today's fields, and
    must run again, not stop the sweep."""
    if not path.exists():
        return []
    data = path.read_bytes()
    cells, cut_short = [], False
    for number, line in enumerate(data.decode().splitlines(), 1):
        where = f"{path}:{number}"
        try:
            cell = json.loads(line)
        except json.JSONDecodeError:
            cut_short = bool(line.strip())
            if cut_short:
                print(f"attnsieve eval: {where}: a cell cut short, run again", file=sys.stderr)
            continue
        cut_short = False
        keyed = isinstance(cell, dict) and isinstance(cell.get("key"), str)
        if keys is not None and keyed and cell["key"] not in keys:
            continue
        missing = [f for f in _CELL_FIELDS if f not in cell] if isinstance(cell, dict) else None
        if missing is None or missing:
            what = f"lacks {missing}" if missing else f"is a {type(cell).__name__}"
            raise ValueError(
                f"--out: {where}: not a cell of attnsieve eval ({what}); move the file away to "
                "start afresh"
            )
        cells.append(cell)
    if data and not data.endswith(b"\n"):  # the next cell, appended, would join the last line
        with open(path, "r+b") as f:
            if cut_short:  # joined to it, the next cell would be lost on every run
                f.truncate(data.rfind(b"\n") + 1)
            else:
                f.seek(0, 2)
                f.write(b"\n")
    return cells


def run_grid(
    model, tokenizer, name, methods, lengths, tasks, args, out: Path, meta: dict
) -> list[dict]:
    """Every (method, length, task) cell, resuming from OUT/cells.jsonl. Before the first cell to
    run and after each the grid's finished cells are written out (``"complete": false`` until the
    last), so a run cut short by a timeout leaves results.json and results.csv of what it
    finished, never an earlier run's."""
    path = out / "cells.jsonl"

    def key(label: str, config: Any, length: int, task: str) -> str:
        spec = json.dumps(config.to_dict(), sort_keys=True)
        run = f"{meta['model_source']}|{meta['dtype']}|{meta['device']}"
        # the protocol changes only cells that compress; the others keep their keys
        run += "|question-in-window" * _in_window(args, config)
        # a cell of other samples (`TASKS_VERSION`) is not resumed
        cell = f"{length}|tasks-v{TASKS_VERSION}|{task}|{args.samples}|{args.seed}"
        return f"{run}|{label}|{spec}|{cell}"

    grid = [(lab, cfg, n, t) for n in lengths for t in tasks for lab, cfg in methods]
    done = {r["key"]: r for r in _read_jsonl(path, {key(*cell) for cell in grid})}
    todo = [cell for cell in grid if key(*cell) not in done]

    def write_finished() -> None:
        finished = [done[key(*cell)] for cell in grid if key(*cell) in done]
        write_results(out, finished, {**meta, "complete": len(finished) == len(grid)})

    if todo:  # a run cut short in its first cell must not leave the last run's "complete" table
        write_finished()
    bar = tqdm(total=len(todo) * args.samples, desc="attnsieve eval", unit="sample")
    try:
        for length in lengths:
            for task in tasks:
                pending = [
                    (lab, cfg) for lab, cfg in methods if key(lab, cfg, length, task) not in done
                ]
                if not pending:
                    continue
                samples = make_samples(task, tokenizer, length, args.samples, args.seed)
                for label, config in pending:
                    bar.set_postfix_str(f"{label} {task} {length}")
                    in_window = _in_window(args, config)
                    record = {
                        "key": key(label, config, length, task),
                        "model": name,
                        "method": label,
                        "config": config.to_dict(),
                        "length": length,
                        "task": task,
                        "samples": args.samples,
                        "seed": args.seed,
                        "device": meta["device"],
                        "dtype": meta["dtype"],
                        "question_in_window": in_window,
                        **run_cell(model, tokenizer, samples, config, bar, in_window),
                        "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
                    }
                    with open(path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    done[record["key"]] = record
                    write_finished()
    finally:  # an error below is printed on a line of its own
        bar.close()
    return [done[key(*cell)] for cell in grid]


def paired_difference(scores: list[float], reference: list[float]) -> tuple[float, int, int]:
    """A method's scores against the reference method's on the same samples: the mean difference
    in points, and how many samples score higher and lower. At 20 samples one sample is 5 points,
    so the two counts say whether a difference is one sample or many."""
    if len(scores) != len(reference) or not scores:
        raise ValueError(
            f"scores: expected one score per reference sample ({len(reference)}), got {len(scores)}"
        )
    pairs = list(zip(scores, reference, strict=True))
    points = 100 * statistics.fmean(a - b for a, b in pairs)
    return points, sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)


def summary_line(cell: dict, dense: dict | None, width: int = 16) -> str:
    """One printed line per cell, its label right-aligned in ``width`` columns; with the dense
    cell of its length and task, the paired difference from it."""
    density = "-" if cell["density"] is None else f"{cell['density']:.3f}"
    line = (
        f"{cell['method']:>{width}} {cell['length']:>7} {cell['task']:>18}: acc "
        f"{cell['accuracy']:.3f} density {density} prefill {cell['prefill_seconds']:.4f} s"
    )
    if dense is not None and dense is not cell and len(dense["scores"]) == len(cell["scores"]):
        points, better, worse = paired_difference(cell["scores"], dense["scores"])
        line += f", vs dense {points:+.1f} points ({better} samples better, {worse} worse)"
    return line


def write_results(out: Path, cells: list[dict], meta: dict) -> None:
    """results.json and results.csv, each whole or not at all: they are written again after every
    cell, and a run cut short mid-write must not leave a truncated file."""
    write_json(out / "results.json", {**meta, "cells": cells}, default=None)

    def write_csv(path: Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(cells)

    replace_file(out / "results.csv", write_csv)


def _fidelity_sample(task: str, tokenizer: Any, length: int, args: argparse.Namespace) -> Sample:
    """The one prompt --fidelity measures. Nothing is generated: it takes the whole length, the
    attention measured, with the tokens the tokenizer adds (BOS), as past it a prompt of the
    model's positions would overrun. Too short a length names the option that gave it."""
    try:
        return prefill_sample(task, tokenizer, length, args.seed)
    except LengthTooShortError as e:  # it names make_samples' own length, not the option
        option = "--lengths" if args.fidelity_length is None else "--fidelity-length"
        raise ValueError(f"{option}: {length} tokens cannot hold the prompt: {e}") from None


def check_prefill_dtype(methods: list[tuple[str, Any]], args: argparse.Namespace) -> None:
    """The Triton prefill kernels take float16 and bfloat16 (the decode kernel float32 too): a
    planned prompt on the Triton backend (the config's, else $ATTNSIEVE_BACKEND) of a float32
    model would fail in every cell, after the model had loaded."""
    env = os.environ.get("ATTNSIEVE_BACKEND")
    planned = [(label, config.backend) for label, config in methods if config.has_planner]
    triton = [label for label, backend in planned if (backend or env) == "triton"]
    dtype = resolve_dtype(args.dtype, torch.device(args.device))
    if triton and dtype not in (torch.float16, torch.bfloat16):
        if args.backend or any(backend == "triton" for _, backend in planned):
            option = "--backend" if args.backend else "--methods"
        else:
            option = "$ATTNSIEVE_BACKEND"
        raise ValueError(
            f"{option}: the triton backend's prefill ({', '.join(triton)}) runs float16 or "
            f"bfloat16, and --dtype {args.dtype} is {dtype} on {args.device}: give --dtype bf16 "
            "or fp16"
        )


def main(args: argparse.Namespace) -> int:
    from attnsieve.eval import plots

    # an entry given twice ("4k,4096") is refused, as --methods' are: it would run once
    lengths = [
        parse_length(x, "--lengths")
        for x in split(DEFAULT_LENGTHS if args.lengths is None else args.lengths)
    ]
    tasks = entries(",".join(TASKS) if args.tasks is None else args.tasks, "--tasks")
    twice = repeated(lengths)
    if twice:
        raise ValueError(f"--lengths: {twice} given twice; give each length once")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"--tasks: unknown tasks {unknown} (known: {sorted(TASKS)})")
    for option, text, given in (
        ("--tasks", args.tasks, tasks),
        ("--lengths", args.lengths, lengths),
    ):
        if not given:
            raise ValueError(f"{option}: expected a comma-separated list, got {text!r}")
    methods = method_configs(args)
    if args.fidelity:
        check_prefill_only(methods)
        if args.samples is not None:
            raise ValueError("--samples: --fidelity measures one prompt of one task")
        if args.tasks is not None and len(tasks) > 1:
            raise ValueError(
                f"--tasks: --fidelity measures one prompt of one task, got {len(tasks)}"
            )
        if args.fidelity_length is not None and args.lengths is not None:
            raise ValueError(
                "--lengths, --fidelity-length: --fidelity measures one prompt, of "
                "--fidelity-length tokens or else the largest of --lengths: give one of them"
            )
    elif args.fidelity_length is not None:
        raise ValueError("--fidelity-length: applies to --fidelity, which is not given")
    check_prefill_dtype(methods, args)
    if args.question_in_window and not any(config.has_kv_policy for _, config in methods):
        raise ValueError(
            "--question-in-window: applies to methods with a KV policy (--kv, or a config "
            "file's), and none has one"
        )
    # a copy: the caller's args stay as given, to be read again
    samples = 10 if args.samples is None else args.samples
    args = argparse.Namespace(**{**vars(args), "samples": samples})
    if args.samples <= 0:
        raise ValueError(f"--samples: expected a positive int, got {args.samples}")
    # lengths are checked against the model's positions before its weights are loaded
    text_config = model_text_config(args.model, args.rope_scale)
    positions = text_config.max_position_embeddings
    check_configs_fit(methods, text_config)
    lengths = within_positions(lengths, positions, args.lengths)
    if args.fidelity:
        asked = args.fidelity_length
        length = max(lengths) if asked is None else parse_length(asked, "--fidelity-length")
        check_lengths_fit([length], positions, name="--fidelity-length")
    check_out(args.out or "eval-results")  # before the model loads and the cells run
    tokenizer = spec_tokenizer(args.model)
    if args.fidelity:
        sample = _fidelity_sample(tasks[0], tokenizer, length, args)
    else:  # every cell's samples hold their task's shortest prompt
        for task, n in itertools.product(tasks, lengths):
            check_length(task, tokenizer, n, args.samples, args.seed)
    model, tokenizer, name = load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        rope_scale=args.rope_scale,
        tokenizer=tokenizer,
    )
    # a local folder by its full path, a Hub id whole (org/name): two folders or Hub models of
    # one name are two models; so are two GGUF files behind "smollm2" (e.g. two
    # quantisations); YaRN's factor makes another model of it (name has it as "-yarnF"). Read
    # here, where a GGUF file gone since loading is a one-line error like the others
    yarn = "" if args.rope_scale is None else f"-yarn{args.rope_scale:g}"
    if args.model in ("smollm2", "probe"):  # the shipped files, whatever the working folder holds
        file = smollm2_path() if args.model == "smollm2" else weights_dir() / "model.safetensors"
        file = file.resolve()
        where = f"{args.model}:{file}:{file.stat().st_size}"
    else:
        where = Path(args.model).resolve() if Path(args.model).exists() else args.model
    source = f"{where}{yarn}"
    out = Path(args.out or Path("eval-results") / name.replace("/", "--"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # the user's folder by its option, not a bare errno line
        raise ValueError(f"--out: cannot make the folder {out}: {e.strerror}") from e
    if args.fidelity:
        result = run_fidelity(model, tokenizer, name, methods, sample, length, args)
        result["environment"] = environment(model.device)
        (out / "fidelity.json").write_text(json.dumps(result, indent=2) + "\n")
        plots.plot_fidelity(result, out / "fidelity.png")
        for label, r in result["methods"].items():
            print(
                f"{label:>16}: recall {r['mean_recall']:.4f}  rel_l2 {r['mean_rel_l2']:.4f}  "
                f"cosine {r['mean_cosine']:.5f} (min {r['min_cosine']:.5f})  "
                f"density {r['mean_density']:.3f}  logits rel err {r['logit_rel_err']:.2e}"
                f"  KL {r['logit_kl']:.2e}"
            )
            if r["as_patched"]["cost_dense_layers"]:
                patched = r["as_patched"]
                print(
                    f"{'':>16}  as patched (cost model: {len(patched['cost_dense_layers'])} "
                    f"layers dense): recall {patched['mean_recall']:.4f}  density "
                    f"{patched['mean_density']:.3f}"
                )
        print(f"wrote {out / 'fidelity.json'} and {out / 'fidelity.png'}")
        return 0
    meta = {
        "model": name,
        "model_source": source,
        "device": str(model.device),  # resolved: --device cuda and cuda:0 are one device
        "dtype": str(model.dtype).removeprefix("torch."),
        "environment": environment(model.device),
        "lengths": lengths,
        "tasks": tasks,
        "methods": [lab for lab, _ in methods],
    }
    cells = run_grid(model, tokenizer, name, methods, lengths, tasks, args, out, meta)
    write_results(out, cells, {**meta, "complete": True})
    plots.plot_accuracy_vs_length(cells, out / "accuracy_vs_length.png")
    if not plots.plot_frontier(cells, out / "frontier.png"):
        print(
            "no frontier plot: it needs a cell labelled 'dense' (--methods dense at --precision "
            "bf16 with no KV policy or decode selector: add none to --kv and --decode)",
            file=sys.stderr,
        )
    plots.plot_kv_frontier(cells, out / "kv_frontier.png")
    plots.plot_budget(cells, out / "budget.png")
    dense = {(c["length"], c["task"]): c for c in cells if c["method"] == "dense"}
    width = max([16, *(len(cell["method"]) for cell in cells)])  # one column for every label
    for cell in cells:
        print(summary_line(cell, dense.get((cell["length"], cell["task"])), width))
    print(f"wrote {out}/results.json, results.csv and plots")
    return 0
