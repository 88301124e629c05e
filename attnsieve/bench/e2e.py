"""`attnsieve bench e2e`: time to first token of a patched model vs stock SDPA (GPU).

Two kinds of model:

- ``--model llama3-8b-random`` (default): Llama-3-8B's shapes (hidden 4096, 32 heads, 8 KV heads,
  head_dim 128, MLP 14336, vocabulary 128256; ``--layers`` decoder layers, 32 by default, an option
  refused for a loaded model) with random bf16 weights and a random-token prompt.
  Random weights give diffuse attention, so adaptive planners keep more blocks than on a trained
  model: this measures overhead more than gain.
- ``--model smollm2`` (or any spec of `attnsieve.eval.models.load_model`): the pretrained model in
  bf16, prompted with a needle-in-a-haystack text of each length (`attnsieve.eval.tasks`).
  ``--rope-scale F`` applies YaRN to go past the trained length (SmolLM2: 8192·F positions).

Time to first token is one forward over the whole prompt (KV cache filled, logits of the last
position only) plus the argmax. The baseline is transformers' own "sdpa" attention; the same
weights run under `attnsieve.patch` with each of ``--methods``, and stock and patched forwards
alternate (after one warm-up of each), so that drift in GPU clocks or host load weighs on both
alike: each is the best of ``--repeats`` runs (2 by default; refused with ``--decode-steps``,
which times its own steps). The stock time of a length is the best over all its methods' runs
(``paired_sdpa_ttft_s`` keeps each method's own), and the medians of both are kept too, to show
how much a host-bound forward scatters. Every run records the mean layout
density and each layer's dense-fallback decision (None: the layer ran its layout). Layers plan as
`attnsieve.patch` does by default: the cost model on (``--no-cost``: every layer plans) and
plan + attention replayed from CUDA graphs once a shape repeats (``--no-graphs``: eager). Before
timing, in each prefill precision the methods run in (and no other), a full-budget streaming
layout (every block, through the attnsieve kernel) must reproduce SDPA's last-position logits;
where it does not, that precision's methods get no speed-up and the command exits 1.
Each length also times the model with attention that costs nothing (its output is zeros, its
logits meaningless): the rest of the forward, whose time no attention method removes, so
``sdpa_ttft_s / attention_free_ttft_s`` bounds every method's speed-up at that length
(``speedup_bound``). ``peak_mem_gb`` and ``sdpa_peak_mem_gb`` are the most CUDA memory allocated
during a forward, the weights included, in GiB (2**30 bytes, whatever the name says). JSON + PNG
go to ``--out`` as e2e_MODEL_LABELS.json/.png (e2e_LABELS for the random model): the methods'
labels joined by "-", then _nocost, _nographs where given.

    attnsieve bench e2e --model smollm2 --rope-scale 16 --lengths 8k,32k,64k,128k \\
        --methods flexprefill,xattention,streaming

``--decode-steps N`` measures decode tokens/s instead, at each of ``--batch``, for every
combination of ``--methods``, ``--kv``, ``--decode`` and ``--precision`` and stock SDPA
(`attnsieve.bench.e2e_decode`; ``--device cpu`` runs it without a GPU, for development), into
e2e_decode_MODEL_LABELS.json/.png (the configs' labels joined by "-", then _nographs). The
prompt, the warm-up steps and the N timed ones must fit the model's positions (checked before it
loads; ``--rope-scale`` extends a loaded model's).

Here: the arguments, the models and prompts, and the sweep; the timing and the correctness check
are `attnsieve.bench.e2e_timing`'s, the summary lines, plot and recorded metadata
`attnsieve.bench.e2e_report`'s.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from attnsieve.api import PRECISIONS as PREFILL_PRECISIONS
from attnsieve.bench import e2e_decode
from attnsieve.bench.common import (
    check_out,
    environment,
    folder,
    next_token_kl,
    positive_int,
    rel_err,
    require_cuda,
    results_paths,
    seed,
    write_json,
)
from attnsieve.bench.e2e_report import command, plot, sdpa_backend, summary, transformers_version
from attnsieve.bench.e2e_timing import (
    CHECK_LENGTH,
    best,
    correctness_check,
    median,
    time_alternating,
    time_attention_free,
)
from attnsieve.eval.sweep_args import (
    EXTEND_HINT,
    add_compression_axes,
    by_option,
    check_configs_fit,
    check_labels,
    check_lengths_fit,
    entries,
    parse_length,
)
from attnsieve.integrations import AttentionConfig, patch
from attnsieve.integrations.transformers import DEFAULT_COST

RANDOM_MODEL = "llama3-8b-random"
LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    bos_token_id=128000,
    eos_token_id=128001,
)
RANDOM_LAYERS = 32  # --layers' default: Llama-3-8B's
REPEATS = 2  # --repeats' default
METHODS = "flexprefill"  # --methods' default, where --config is not given
PROMPT_TASK = "niah_single"  # a loaded model's prompts: real text with a needle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "time to first token, patched vs SDPA, random Llama-3-8B or a real model"
    parser.add_argument(
        "--model",
        default=RANDOM_MODEL,
        help=f"'{RANDOM_MODEL}' (random weights), 'smollm2', a .gguf file or a transformers model",
    )
    parser.add_argument(
        "--rope-scale",
        type=_yarn_factor,
        default=None,
        help="YaRN factor (>= 1) for a loaded model",
    )
    parser.add_argument(
        "--lengths",
        nargs="+",
        default=None,
        help="prompt lengths, e.g. 8k,32k or 65536 131072 (default: 64k,128k for the random "
        "model, else powers of two from 8k; those that leave the model's positions room for "
        "--decode-steps)",
    )
    parser.add_argument(
        "--methods",
        "--method",
        default=None,
        help=f"comma-separated planner names and/or AttentionConfig JSON files (default {METHODS}"
        "; not with --config)",
    )
    parser.add_argument(
        "--config", default=None, help="an AttentionConfig JSON file, timed instead of --methods"
    )
    parser.add_argument(
        "--layers",
        type=positive_int,
        default=None,
        help=f"decoder layers of the random model (default {RANDOM_LAYERS}; refused for a "
        "loaded model)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help=f"timed runs after one warm-up (default {REPEATS}; time to first token only, "
        "refused with --decode-steps)",
    )
    parser.add_argument(
        "--out", type=folder, default=Path("benchmarks/results"), help="directory for JSON + PNG"
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of the prompts, the random model's weights and the check's tokens (default 0)",
    )
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default=None,
        help="cuda (the default); cpu runs --decode-steps only, for development: its times say "
        "little",
    )
    parser.add_argument(
        "--no-cost",
        action="store_true",
        help="plan every layer (the cost model otherwise keeps a layer dense where planning "
        "is predicted not to pay for itself)",
    )
    parser.add_argument(
        "--no-graphs",
        action="store_true",
        help="plan eagerly (otherwise a layer's plan + attention replays from a CUDA graph)",
    )
    decode = parser.add_argument_group(
        "decode speed (with --decode-steps)",
        "KV memory in the JSON: kv_mib, the cache that holds tokens (on the paged cache, the pages "
        "heads hold); kv_reserved_mib, pages reserved ahead of the tokens for CUDA-graph replays; "
        "kv_pool_mib, the paged cache's pools, free pages included",
    )
    decode.add_argument(
        "--decode-steps", type=int, default=None, help="time N greedy decode steps per cell"
    )
    decode.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,8")
    add_compression_axes(decode)
    parser.add_argument(
        "--precision",
        default="bf16",
        help="comma-separated: bf16, int8-fp8 (time to first token: each method in each; bf16 "
        "keeps a config file's own); with --decode-steps also fp8-kv, int8-fp8+fp8-kv",
    )
    decode.add_argument(
        "--paged-cache",
        action="store_true",
        help="run the dense configs on attnsieve's paged cache too (its decode kernel and, unless "
        "--no-graphs, CUDA-graph decode steps), so that every config decodes the same way",
    )


def _yarn_factor(text: str) -> float:
    """A finite number >= 1 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 1, got {text!r}")
    return value


def main(args: argparse.Namespace) -> int:
    decode = args.decode_steps is not None
    decoded = e2e_decode.WARMUP_STEPS + args.decode_steps if decode else 0
    # every argument is checked before the GPU is asked for and the weights load
    _mode_options(args, decode)
    if decode:
        batches, configs = e2e_decode.plan(args)
    else:
        methods = _methods(args)
    requested = _parse_lengths(args.lengths)
    check_out(args.out)
    if args.model == RANDOM_MODEL:
        positions = LLAMA3_8B["max_position_embeddings"]
    else:  # the model's config alone: a bad name fails here
        from attnsieve.eval.models import model_text_config

        text_config = model_text_config(args.model, args.rope_scale)
        positions = text_config.max_position_embeddings
        option = "--config" if args.config is not None else "--methods"
        check_configs_fit(configs if decode else methods, text_config, option)
    lengths = _lengths(requested, args.model, positions, decoded)
    if args.model != RANDOM_MODEL:
        # the default lengths are cut to the positions the decode steps leave
        option = "--lengths" if requested else "--decode-steps" if decode else "--model"
        _check_prompts(args.model, lengths, args.seed, option)
    device = torch.device("cpu") if args.device == "cpu" else require_cuda()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    model, tokenizer, name = _load(args, device)
    # a multimodal model (Gemma 3) keeps its decoder's sizes in the text config
    text = model.config.get_text_config()
    positions = text.max_position_embeddings
    lengths = _lengths(requested, name, positions, decoded)
    dtype = str(model.dtype).removeprefix("torch.")
    print(f"model: {name}, {text.num_hidden_layers} layers, {dtype}, {positions} "
          f"positions, loaded in {time.perf_counter() - started:.0f} s")  # fmt: skip
    if decode:
        prompts = {n: prompt_ids(tokenizer, model, n, args.seed, device) for n in lengths}
        meta = {"command": command(args), "model": _describe(model, name, args)}
        # one file a run configuration, as time to first token names its own
        labels = "-".join(label for label, _ in configs) + "_nographs" * args.no_graphs
        paths = results_paths(args.out, f"e2e_decode_{name}_{labels}")
        return e2e_decode.run(
            model, prompts, batches, configs, args.decode_steps, meta, paths, not args.no_graphs
        )

    # the kernel of each prefill precision the methods run in is checked, and gates their
    # speed-ups; only those: a check of another precision would gate nothing, yet fail the command
    precisions = dict.fromkeys(config.prefill_precision for _, config in methods)
    checks = {precision: correctness_check(model, device, precision) for precision in precisions}
    for precision, each in checks.items():
        print(
            f"check ({precision} full-budget layout vs sdpa, {CHECK_LENGTH} tokens): rel err "
            f"{each['rel_err']:.2e} (limit {each['tolerance']}), "
            f"{each['dense_fallback_layers']} layers ran dense"
            + (", from a CUDA-graph replay" if each["graph_replay"] else "")
            + (": passed" if each["passed"] else f": FAILED, no speed-up for {precision} methods")
        )
    labels = "-".join(label for label, _ in methods)
    labels += "_nocost" * args.no_cost + "_nographs" * args.no_graphs
    json_path, png_path = results_paths(
        args.out, f"e2e_{labels}" if name == RANDOM_MODEL else f"e2e_{name}_{labels}"
    )

    def result(complete: bool) -> dict[str, Any]:
        return {
            "command": command(args),
            "complete": complete,
            "environment": {**environment(device), "transformers": transformers_version()},
            "model": _describe(model, name, args),
            "methods": {label: config.to_dict() for label, config in methods},
            "sdpa_backend": sdpa_backend(model, device),
            "cost_model": not args.no_cost,
            "graphs": not args.no_graphs,
            "correctness_check": checks.get("bf16"),  # None where no method runs in bf16
            **{
                f"correctness_check_{p.replace('-', '_')}": each
                for p, each in checks.items()
                if p != "bf16"
            },
            "results": rows,
            "wall_s": time.perf_counter() - started,
        }

    rows: list[dict[str, Any]] = []
    png_path.unlink(missing_ok=True)  # an earlier run's, beside this run's partial JSON
    write_json(json_path, result(False))
    # each method's stock and patched forwards, then the attention-free ones, warm-ups included
    forwards = (2 * len(methods) + 1) * (args.repeats + 1)
    with tqdm(total=len(lengths) * forwards, desc="bench e2e", unit="forward") as bar:
        for length in lengths:
            bar.set_postfix_str(f"{length} tokens, prompt")
            ids = prompt_ids(tokenizer, model, length, args.seed, device)
            row: dict[str, Any] = {"length": length, "prompt_tokens": ids.shape[1], "methods": {}}
            stock_runs = []
            for label, config in methods:
                cost = None if args.no_cost else DEFAULT_COST
                handle = patch(model, config, cost=cost, graphs=not args.no_graphs)
                bar.set_postfix_str(f"{length} tokens, {label} and {handle.previous}")
                with handle as stats:
                    stock, patched = time_alternating(
                        model, ids, args.repeats, handle.previous, tick=lambda _: bar.update()
                    )
                    graphs = None if handle.graphs is None else handle.graphs.captured
                stock_runs += stock
                sdpa_logits = stock[-1][1]
                row["methods"][label] = {
                    "ttft_s": best(patched),
                    "paired_sdpa_ttft_s": best(stock),
                    # the best run is the figure of merit; the medians show this host's scatter
                    "median_ttft_s": median(patched),
                    "paired_sdpa_median_ttft_s": median(stock),
                    "mean_density": stats.mean_density,
                    "density_per_layer": stats.density_per_layer,
                    "fallback_per_layer": stats.fallback_per_layer,
                    "top1_match": bool(sdpa_logits.argmax() == patched[-1][1].argmax()),
                    "logits_rel_err": rel_err(patched[-1][1], sdpa_logits),
                    "logits_kl": next_token_kl(patched[-1][1], sdpa_logits),
                    "peak_mem_gb": max(run[2] for run in patched),
                    "graphs_captured": graphs,
                }
            row["sdpa_ttft_s"] = best(stock_runs)
            row["sdpa_peak_mem_gb"] = max(run[2] for run in stock_runs)
            bar.set_postfix_str(f"{length} tokens, attention-free")
            row["attention_free_ttft_s"] = time_attention_free(
                model, ids, args.repeats, tick=lambda _: bar.update()
            )
            row["speedup_bound"] = row["sdpa_ttft_s"] / row["attention_free_ttft_s"]
            free_ms = row["attention_free_ttft_s"] * 1e3
            bar.write(f"{length:>7} tokens: attention-free forward {free_ms:.1f} ms, so no "
                      f"attention method exceeds {row['speedup_bound']:.2f}x here")  # fmt: skip
            for label, config in methods:
                entry = row["methods"][label]
                passed = checks[config.prefill_precision]["passed"]
                entry["speedup"] = row["sdpa_ttft_s"] / entry["ttft_s"] if passed else None
                bar.write(summary(length, row["sdpa_ttft_s"], label, entry))
            rows.append(row)
            write_json(json_path, result(False))  # a run cut short keeps its lengths
            del ids
            torch.cuda.empty_cache()

    final = result(True)
    write_json(json_path, final)
    plot(final, png_path)
    print(f"wrote {json_path} and {png_path} in {final['wall_s']:.0f} s")
    return 0 if all(each["passed"] for each in checks.values()) else 1


def _mode_options(args: argparse.Namespace, decode: bool) -> None:
    """--repeats (time to first token), --device cpu (decode speed), --layers (the random model)
    and --rope-scale (a loaded model): given where they do not apply, a ValueError naming them;
    left out, their default where they apply, and --methods' unless --config is given (so that
    the recorded command spells them there)."""
    if not decode and args.device == "cpu":
        raise ValueError("--device: cpu runs --decode-steps only; time to first token needs CUDA")
    if decode and args.repeats is not None:
        raise ValueError("--repeats: applies to time to first token, not --decode-steps")
    if args.model != RANDOM_MODEL and args.layers is not None:
        raise ValueError(
            f"--layers: applies to the random model ({RANDOM_MODEL}), not a loaded one"
        )
    if args.model == RANDOM_MODEL and args.rope_scale is not None:
        raise ValueError("--rope-scale: applies to a loaded model, not the random one")
    if not decode and args.repeats is None:
        args.repeats = REPEATS
    if args.model == RANDOM_MODEL and args.layers is None:
        args.layers = RANDOM_LAYERS
    if args.methods is None and args.config is None:
        args.methods = METHODS


def _methods(args: argparse.Namespace) -> list[tuple[str, AttentionConfig]]:
    """(label, config) per entry of --methods (a planner name or a JSON file), or of --config."""
    if (args.kv, args.decode, args.kv_ratio, args.decode_ratio) != (None,) * 4:
        raise ValueError(
            "--kv/--decode/--kv-ratio/--decode-ratio: apply to decode speed (--decode-steps)"
        )
    precisions = entries(args.precision, "--precision")
    if not precisions or not set(precisions) <= set(PREFILL_PRECISIONS):
        raise ValueError(
            f"--precision: time to first token takes {', '.join(PREFILL_PRECISIONS)} (fp8-kv "
            f"applies to decode speed, --decode-steps); got {args.precision!r}"
        )
    if args.batch.strip() != "1" or args.paged_cache:  # time to first token is of one prompt
        raise ValueError("--batch/--paged-cache: apply to decode speed (--decode-steps)")
    if args.config is not None and args.methods is not None:
        raise ValueError(
            "--methods: not used with --config (which is timed instead); give its file to --methods"
        )
    if args.config is not None and not args.config.endswith(".json"):  # not a planner's name
        raise ValueError(f"--config: expected an AttentionConfig JSON file, got {args.config!r}")
    out = []
    for entry in [args.config] if args.config is not None else entries(args.methods, "--methods"):
        if entry.endswith(".json"):
            try:  # the file's own errors begin with its path
                label, config = Path(entry).stem, AttentionConfig.from_json(entry)
            except (ValueError, TypeError) as e:
                raise type(e)(f"{'--config' if args.config else '--methods'}: {e}") from None
        else:
            try:
                label, config = entry, AttentionConfig(prefill=entry)
            except (ValueError, TypeError) as e:
                raise by_option(e, {"prefill": f"--methods: {entry}"}) from None
        for precision in precisions:  # bf16, the default, keeps a config file's own precision
            if precision == "bf16":
                out.append((label, config))
            else:
                out.append((f"{label}+{precision}", config.override(precision=precision)))
    if not out:
        raise ValueError("--methods: expected at least one method")
    check_labels([label for label, _ in out], "--methods")
    return out


def _parse_lengths(texts: list[str] | None) -> list[int] | None:
    """'8k,32k' or '65536 131072' -> [8192, 32768] / [65536, 131072]; None stays None."""
    if texts is None:
        return None
    lengths = [parse_length(t, "--lengths") for text in texts for t in text.split(",") if t.strip()]
    if not lengths:
        raise ValueError("--lengths: expected at least one length")
    return list(dict.fromkeys(lengths))  # a length given twice is timed once (eval refuses it)


def _lengths(lengths: list[int] | None, name: str, positions: int, decoded: int = 0) -> list[int]:
    """The requested lengths, checked against the model's positions, or the default ones.
    ``decoded``: the tokens decoded after each prompt (``--decode-steps`` and the warm-up), which
    take positions after it."""
    room = positions - decoded
    hint = "" if name == RANDOM_MODEL else f"; {EXTEND_HINT}"  # --rope-scale: a loaded model's
    if room < 1:
        raise ValueError(
            f"--decode-steps: expected fewer than {positions - e2e_decode.WARMUP_STEPS} steps "
            f"(the model's {positions} positions, {e2e_decode.WARMUP_STEPS} of them warm-up "
            f"steps), got {decoded - e2e_decode.WARMUP_STEPS}{hint}"
        )
    if lengths is None:
        defaults = [65536, 131072] if name == RANDOM_MODEL else [2**i for i in range(13, 18)]
        return [n for n in defaults if n <= room] or [room]
    check_lengths_fit(lengths, positions, hint=name != RANDOM_MODEL)
    if max(lengths) > room:
        raise ValueError(
            f"--lengths: expected at most {room} tokens, so that {decoded} decode steps "
            f"(--decode-steps and {e2e_decode.WARMUP_STEPS} warm-up) fit the model's {positions} "
            f"positions after the prompt; got {lengths}{hint}"
        )
    return lengths


def _load(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any, str]:
    if args.model == RANDOM_MODEL:
        return build_model(args.layers, device), None, RANDOM_MODEL
    from attnsieve.eval.models import load_model

    dtype = "bfloat16" if device.type == "cuda" else "float32"  # CPU: decode mode's tests
    return load_model(args.model, device=device, dtype=dtype, rope_scale=args.rope_scale)


def build_model(layers: int, device: torch.device) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=layers, **LLAMA3_8B)
    with torch.device(device):  # initialise on the GPU: 16 GB of random bf16 weights in seconds
        model = LlamaForCausalLM._from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    return model.eval()


def _check_prompts(spec: str, lengths: list[int], seed: int, option: str) -> None:
    """Each length holds `prompt_ids`' text (its tokenizer alone, before the weights load); an error
    names ``option``, the one that set the lengths."""
    from attnsieve.eval.models import spec_tokenizer
    from attnsieve.eval.tasks import LengthTooShortError, check_length

    tokenizer = spec_tokenizer(spec)
    for length in lengths:
        try:
            check_length(PROMPT_TASK, tokenizer, length, 1, seed, answer_room=False)
        except LengthTooShortError as e:
            raise ValueError(
                f"{option}: {e} (a loaded model's prompts are {PROMPT_TASK} text)"
            ) from None


def prompt_ids(tokenizer: Any, model: Any, length: int, seed: int, device: torch.device) -> Tensor:
    """Random tokens for the random model; a needle-in-a-haystack text for a real one, so that
    adaptive planners see the attention of real text (at most ``length`` tokens, no room kept for
    an answer: time to first token generates none, and `--decode-steps` times its steps after
    the whole length)."""
    if tokenizer is None:
        return torch.randint(0, model.config.vocab_size, (1, length), device=device)
    from attnsieve.eval.tasks import encode, make_samples

    sample = make_samples(PROMPT_TASK, tokenizer, length, 1, seed, answer_room=False)[0]
    return torch.tensor([encode(tokenizer, sample.prompt)], device=device)


def _describe(model: Any, name: str, args: argparse.Namespace) -> dict[str, Any]:
    config = model.config.get_text_config()
    return {
        "name": name,
        "spec": args.model,
        "weights": "random" if name == RANDOM_MODEL else "pretrained",
        "layers": config.num_hidden_layers,
        "heads": config.num_attention_heads,
        "kv_heads": config.num_key_value_heads,
        "dtype": str(model.dtype).removeprefix("torch."),
        "max_position_embeddings": config.max_position_embeddings,
        "rope_parameters": config.rope_parameters,
        "prompt": "random tokens" if name == RANDOM_MODEL else f"{PROMPT_TASK} text",
    }
