"""`attnsieve eval`'s command line: its options (`add_arguments`) and what they name: the
prompt lengths (`parse_length`, `within_positions`) and a (label, AttentionConfig) per combination
of the method axes --methods, --kv, --decode and --precision (`method_configs`, which ``attnsieve
bench e2e --decode-steps`` shares). `attnsieve.eval.harness` runs the sweep they describe.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from attnsieve.api.backend import BACKENDS
from attnsieve.bench.common import folder, seed
from attnsieve.eval.models import DTYPE_HELP, DTYPES, add_device_argument
from attnsieve.eval.tasks import TASKS
from attnsieve.integrations.config import read_json, unique_keys

DEFAULT_LENGTHS = "4k,8k,16k"
EXTEND_HINT = "--rope-scale F extends a pretrained model to F x its trained length"


def add_compression_axes(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--kv, --kv-ratio, --decode and --decode-ratio, as `method_configs` reads them (``attnsieve
    eval`` and ``attnsieve bench e2e --decode-steps``)."""
    parser.add_argument(
        "--kv",
        default=None,
        help="comma-separated KV policies or KV-entry JSON files (none, the default: keep every "
        "token; a config file among --methods keeps its own unless --kv is given)",
    )
    parser.add_argument(
        "--kv-ratio",
        default=None,
        help="the --kv policies' budget ratio, or comma-separated ratios, one config each (0.25)",
    )
    parser.add_argument(
        "--decode",
        default=None,
        help="comma-separated decode selectors (none, the default: read all; a config file among "
        "--methods keeps its own unless --decode is given)",
    )
    parser.add_argument(
        "--decode-ratio",
        default=None,
        help="the --decode selectors' token budget ratio, or comma-separated ratios, one config "
        "each (0.125)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="'smollm2' (SmolLM2-135M-Instruct), 'probe' (shipped probe weights), a .gguf file, "
        "or a transformers model path or hub id",
    )
    parser.add_argument(
        "--rope-scale",
        type=float,
        default=None,
        help="YaRN factor F: run the model to F x its trained length (smollm2: 8192 x F)",
    )
    parser.add_argument(
        "--methods",
        default="dense,flexprefill",
        help="comma-separated planner names and/or AttentionConfig JSON files",
    )
    parser.add_argument(
        "--method-kwargs",
        default="{}",
        help='JSON {planner: {hyper-parameter: value}}, e.g. \'{"streaming": '
        '{"window_tokens": 1024}}\'',
    )
    add_compression_axes(parser)
    parser.add_argument(
        "--precision",
        default="bf16",
        help="comma-separated: bf16, int8-fp8, fp8-kv, int8-fp8+fp8-kv (bf16 leaves a config "
        "file's own precision)",
    )
    parser.add_argument(
        "--lengths",
        default=None,
        help="cell lengths in tokens, each holding the prompt and the answer generated after it: "
        "4k = 4096 (default 4k,8k,16k, those within the model's positions)",
    )
    parser.add_argument(
        "--tasks",
        help=f"any of {', '.join(TASKS)} (default: all; --fidelity takes one, default "
        f"{next(iter(TASKS))})",
    )
    parser.add_argument(
        "--samples", type=int, help="samples per cell (default 10; not with --fidelity)"
    )
    parser.add_argument("--seed", type=seed, default=0, help="seed of the task samples (default 0)")
    parser.add_argument("--out", type=folder, help="results folder (default: eval-results/MODEL)")
    add_device_argument(parser)
    parser.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default="auto",
        help=DTYPE_HELP,
    )
    parser.add_argument(
        "--min-prefill-length",
        type=int,
        default=None,
        help="prompts shorter than this stay dense (AttentionConfig field; default 1, every prompt "
        "plans; given, it replaces a config file's own)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="attnsieve kernel backend (given, it replaces a config file's own)",
    )
    parser.add_argument(
        "--question-in-window",
        action="store_true",
        help="a KV policy compresses after the question is prefilled, its queries in the policy's "
        "observation window (SnapKV's setting); default: before it (kvpress's protocol)",
    )
    parser.add_argument(
        "--fidelity",
        action="store_true",
        help="report per layer/head attention recall and output error instead",
    )
    parser.add_argument(
        "--fidelity-length", help="prompt length of --fidelity (default: largest of --lengths)"
    )


def parse_length(text: str, name: str = "lengths") -> int:
    """'4k' -> 4096, '4096' -> 4096; ``name``: the option an error names."""
    t = text.strip().lower()
    digits = t[:-1] if t.endswith("k") else t
    if not (digits.isascii() and digits.isdigit()) or int(digits) <= 0:  # not "²"
        raise ValueError(f"{name}: expected entries like 4k or 4096, got {text!r}")
    return int(digits) * (1024 if t.endswith("k") else 1)


def split(text: str) -> list[str]:
    """The comma-separated entries of ``text``, stripped; empty ones left out."""
    return [x.strip() for x in text.split(",") if x.strip()]


def repeated(items: Sequence[Hashable]) -> list[Any]:
    """The items that occur more than once, sorted."""
    return sorted({item for item in items if items.count(item) > 1})


def entries(text: str, option: str) -> list[str]:
    """`split`'s entries of ``option``, refused where one is given twice (it would run twice, or
    once under one label)."""
    out = split(text)
    twice = repeated(out)
    if twice:
        raise ValueError(f"{option}: {twice} given twice; give each entry once")
    return out


def check_labels(labels: list[str], option: str) -> None:
    """Refuse two entries of ``option`` under one label: results keyed on it would keep one."""
    twice = repeated(labels)
    if twice:
        raise ValueError(
            f"{option}: two entries would be labelled {twice} (config files are labelled by "
            "their name): rename one"
        )


def method_configs(args: argparse.Namespace, min_prefill_default: int = 1) -> list[tuple[str, Any]]:
    """(label, AttentionConfig) per combination of --methods, --kv, --decode and --precision; a
    JSON file among --methods is labelled by its stem and takes the other axes as they are: a
    given --kv or --decode (``none`` included) replaces that role of the file in every layer (its
    per-layer entries too), one left out keeps the file's; --precision bf16 (the default) leaves
    the file's precision, as `attnsieve bench e2e` does. A JSON file among --kv is a KV-policy
    entry (``attnsieve calibrate --retrieval-heads``), labelled by its stem, at each of --kv-ratio
    unless it sets a budget or ratio itself. --min-prefill-length and --backend, given, replace a
    file's own; left out, a file keeps its own, ``min_prefill_default`` where it sets none.
    --method-kwargs names planners among --methods."""
    from attnsieve.integrations import AttentionConfig
    from attnsieve.methods import PLANNERS

    kwargs = planner_kwargs(args.method_kwargs, "--method-kwargs", PLANNERS)
    unused = sorted(set(kwargs) - set(split(args.methods)))
    if unused:
        raise ValueError(f"--method-kwargs: {unused} not among --methods {args.methods!r}")
    given = {
        name: value
        for name, value in (
            ("min_prefill_length", args.min_prefill_length),
            ("backend", args.backend),
        )
        if value is not None
    }
    defaults = {"min_prefill_length": min_prefill_default}
    asked = {"--kv": args.kv, "--decode": args.decode, "--precision": args.precision}
    for name, text in asked.items():
        if text is not None and not split(text):
            raise ValueError(f"{name}: expected a comma-separated list, got {text!r}")
    for name, text in {"--methods": args.methods, **asked}.items():
        entries(text or "", name)  # else refused below as two entries of one label (two files)
    kvs, decodes = (
        [_KEEP] if text is None else [None if x == "none" else x for x in split(text)]
        for text in (args.kv, args.decode)
    )
    kv_ratios = _ratios(args.kv_ratio, "--kv-ratio", kvs, "--kv", 0.25, zero=True)
    decode_ratios = _ratios(args.decode_ratio, "--decode-ratio", decodes, "--decode", 0.125)
    kv_variants, ratio_read = _kv_variants(kvs, kv_ratios)
    decode_variants = [
        (decode, None) if decode is None or decode is _KEEP else
        ({"method": decode, "ratio": ratio}, f"{decode}@{ratio:g}")
        for decode in decodes
        for ratio in ([None] if decode is None or decode is _KEEP else decode_ratios)
    ]  # fmt: skip
    precisions = split(args.precision)
    out = []
    for method in split(args.methods):
        for (kv, kv_part), (decode, decode_part), precision in itertools.product(
            kv_variants, decode_variants, precisions
        ):
            keep_own = precision == "bf16" and method.endswith(".json")
            roles: dict[str, Any] = {} if keep_own else {"precision": precision}
            parts = [Path(method).stem if method.endswith(".json") else method]
            if kv is not _KEEP:
                roles["kv"] = kv
            if decode is not _KEEP:
                roles["decode"] = decode
            parts += [part for part in (kv_part, decode_part) if part]
            parts += [precision] if precision != "bf16" else []
            options = {f: o for f, o in AXIS_OPTIONS.items() if f in roles or f in given}
            if not method.endswith(".json"):
                options["prefill"] = (
                    f"--{'method-kwargs' if method in kwargs else 'methods'}: {method}"
                )
            try:
                if method.endswith(".json"):
                    data = _config_file(method)
                    try:
                        config = AttentionConfig.from_json({**defaults, **data, **given})
                    except (ValueError, TypeError) as e:  # named "source:", the dict it was given
                        raise type(e)(
                            f"--methods: {method}: {str(e).removeprefix('source: ')}"
                        ) from None
                    config = config.override(**roles)
                else:
                    prefill = {"method": method, **kwargs.get(method, {})}
                    config = AttentionConfig(prefill=prefill, **roles, **{**defaults, **given})
            except (ValueError, TypeError) as e:
                raise by_option(e, options) from None
            out.append(("+".join(parts), config))
    if not out:
        raise ValueError("--methods: expected at least one method")
    if args.kv_ratio is not None and not ratio_read:
        raise ValueError("--kv-ratio: every --kv entry sets its own budget or ratio")
    check_labels([label for label, _ in out], "--methods, --kv")  # files of one name in either
    return out


_KEEP = object()  # --kv / --decode not given: a config file keeps its role
# the option that sets each of AttentionConfig's fields in a sweep where given (`by_option`)
AXIS_OPTIONS = {
    "kv": "--kv",
    "decode": "--decode",
    "precision": "--precision",
    "min_prefill_length": "--min-prefill-length",
    "backend": "--backend",
}


def _ratios(
    text: str | None, option: str, axis: list, parent: str, default: float, *, zero: bool = False
) -> list[float]:
    """An axis' ratios (comma-separated numbers in (0, 1], or [0, 1] where ``zero``): refused
    where no entry of its axis would read them."""
    if text is not None and all(entry is None or entry is _KEEP for entry in axis):
        raise ValueError(f"{option}: applies to the methods of {parent}, and none is given")
    if text is None:
        return [default]
    try:
        ratios = [float(x) for x in split(text)]
    except ValueError:
        ratios = []
    if not ratios or not all(math.isfinite(r) for r in ratios):
        raise ValueError(f"{option}: expected comma-separated numbers, got {text!r}")
    low = "[0" if zero else "(0"
    if outside := [r for r in ratios if not (0 <= r <= 1 if zero else 0 < r <= 1)]:
        raise ValueError(f"{option}: expected ratios in {low}, 1], got {outside}")
    if twice := repeated([f"{r:g}" for r in ratios]):  # as the labels write them
        raise ValueError(f"{option}: {twice} given twice; give each ratio once")
    return ratios


def _kv_variants(kvs: list, ratios: list[float]) -> tuple[list[tuple[Any, str | None]], bool]:
    """(entry, label part) per --kv entry and, for those that take a ratio, per ratio; and
    whether any takes one (a file that sets its budget or ratio is one variant)."""
    variants, read = [], False
    for kv in kvs:
        if kv is None or kv is _KEEP:
            variants.append((kv, None))
            continue
        for ratio in ratios:
            entry, reads = _kv_entry(kv, ratio)
            budget = entry["ratio"] if entry.get("budget") is None else entry["budget"]
            variants.append((entry, f"{Path(kv).stem if kv.endswith('.json') else kv}@{budget:g}"))
            read |= reads
            if not reads:
                break
    return variants, read


def _config_file(path: str) -> dict[str, Any]:
    """An AttentionConfig JSON file among --methods, read with errors naming it."""
    data = read_json(path, f"--methods: {path}", "the config file")
    if not isinstance(data, dict):
        raise ValueError(f"--methods: {path}: expected a JSON object, got {type(data).__name__}")
    return data


def _kv_entry(kv: str | None, ratio: float) -> tuple[dict[str, Any] | None, bool]:
    """The entry of a --kv name or JSON file, and whether it takes ``ratio`` (a file that sets a
    budget or ratio keeps its own)."""
    if kv is None:
        return None, False
    if not kv.endswith(".json"):
        return {"method": kv, "ratio": ratio}, True
    from attnsieve.integrations.config import read_entry

    entry = read_entry(kv, "--kv")
    if any(entry.get(name) is not None for name in ("budget", "ratio")):
        return entry, False
    return {**entry, "ratio": ratio}, True


def check_configs_fit(
    methods: list[tuple[str, Any]], text_config: Any, option: str = "--methods"
) -> None:
    """Each (label, config) of ``methods`` against the model's text config (`model_text_config`,
    read without its weights; `check_fits`: a layer past its last, per-head entries of another
    length): found before the weights load and the cells run, not in the first cell."""
    from attnsieve.integrations.transformers import check_fits

    for label, config in methods:
        try:
            check_fits(config, text_config)
        except ValueError as e:
            raise ValueError(f"{option}: {label}: {e}") from None


def by_option(error: Exception, options: dict[str, str]) -> Exception:
    """``error`` from building an `AttentionConfig`, whose message begins with the fields at fault
    (``kv: ...``, ``decode (layer 2): ...``, ``decode, kv: ...``), reworded to begin with the
    options that set them instead (``options``: field -> option); an error naming another field
    comes back as is."""
    field, sep, rest = str(error).partition(": ")
    field, _, where = field.partition(" (")
    names = field.split(", ")
    if not sep or not all(name in options for name in names):
        return error
    where = f"{where.removesuffix(')')}: " if where else ""
    return type(error)(f"{', '.join(options[name] for name in names)}: {where}{rest}")


def planner_kwargs(text: str, option: str, planners: Iterable[str]) -> dict[str, dict[str, Any]]:
    """A JSON object {planner: {hyper-parameter: value}} over ``planners``, given as ``option``
    (a typo'd planner would run at its defaults unnoticed; a "method" key would run another
    planner under this one's label)."""
    try:
        kwargs = json.loads(text, object_pairs_hook=unique_keys)
    except ValueError as e:  # not JSON, or a key given twice
        raise ValueError(f"{option}: not JSON ({e}): {text!r}") from None
    shape = isinstance(kwargs, dict) and all(
        isinstance(v, dict) and "method" not in v for v in kwargs.values()
    )
    if not shape or not set(kwargs) <= set(planners):
        raise ValueError(
            f"{option}: expected a JSON object {{planner: {{hyper-parameter: value}}}} with "
            f"planners among {sorted(planners)}, got {text!r}"
        )
    return kwargs


def check_lengths_fit(
    lengths: list[int], positions: int, hint: bool = True, name: str = "--lengths"
) -> None:
    """Asked lengths beyond the model's positions: an error naming the option ``name`` (``hint``:
    how to extend them)."""
    if max(lengths) > positions:
        raise ValueError(
            f"{name}: expected 1 to {positions} tokens (the model's positions), got {lengths}"
            + (f"; {EXTEND_HINT}" if hint else "")
        )


def within_positions(lengths: list[int], positions: int, asked: str | None) -> list[int]:
    """Lengths the model has positions for: the default ones that fit, or the asked ones (all of
    them, else an error)."""
    if asked is None:
        return [n for n in lengths if n <= positions] or [positions]
    check_lengths_fit(lengths, positions)
    return lengths
