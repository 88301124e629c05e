"""`attnsieve demo | run | eval | calibrate | bench {kernels,prefill,e2e}`.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args)``; the
module is imported only when its subcommand runs, so `attnsieve demo` never imports transformers.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": ("attnsieve.demo", "sparse vs dense attention on the embedded default (CPU, < 1 min)"),
    "run": (
        "attnsieve.integrations.run",
        "generate with a transformers model under a sparse method",
    ),
    "eval": (
        "attnsieve.eval.harness",
        "accuracy and speed of methods on synthetic long-context tasks",
    ),
    "calibrate": ("attnsieve.eval.calibrate", "choose a method and budget per layer and head"),
    "bench kernels": ("attnsieve.bench.kernels", "prefill kernel vs SDPA and FlexAttention (GPU)"),
    "bench prefill": ("attnsieve.bench.prefill", "every planner: density, recall, time (GPU)"),
    "bench e2e": ("attnsieve.bench.e2e", "time to first token, Llama-3-8B-shaped model (GPU)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  attnsieve {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage:\n" + "\n".join(lines) + "\n\n`attnsieve COMMAND --help` lists a command's options."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    words = 2 if argv[:1] == ["bench"] else 1
    name = " ".join(argv[:words])
    if name not in COMMANDS:
        print(_usage(), file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"attnsieve {name}", description=help_text)
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(argv[words:])) or 0)
