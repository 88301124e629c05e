"""`attnsieve demo | run | eval | calibrate | bench {kernels,prefill,e2e,decode}`.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args)``; the
module is imported only when its subcommand runs.

User errors (a bad option value, a missing file, CUDA asked for where there is none: the
ValueError, TypeError or OSError a subcommand raises, or the message it exits with) print one line,
``attnsieve COMMAND: error: MESSAGE``, and exit 2; a message that names the model loader's argument
(``spec: ...``) names the option instead (``--model: ...``, `OPTION_OF`). ``ATTNSIEVE_DEBUG=1``
re-raises them instead, for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

COMMANDS = {
    "demo": ("attnsieve.demo", "dense vs sparse prefill on SmolLM2-135M-Instruct (CPU, ~1-2 min)"),
    "run": (
        "attnsieve.run",
        "generate with a model under a config (prefill, KV policy, decode selector, precision)",
    ),
    "eval": (
        "attnsieve.eval.harness",
        "accuracy, speed and KV memory of methods on synthetic long-context tasks",
    ),
    "calibrate": ("attnsieve.eval.calibrate", "choose a method and budget per layer and head"),
    "bench kernels": ("attnsieve.bench.kernels", "prefill kernel vs SDPA and FlexAttention (GPU)"),
    "bench prefill": ("attnsieve.bench.prefill", "every planner: density, recall, time (GPU)"),
    "bench e2e": ("attnsieve.bench.e2e", "time to first token, SmolLM2 or a random model (GPU)"),
    "bench decode": (
        "attnsieve.bench.decode",
        "paged decode kernel vs SDPA decode, bf16 and FP8 pages; sparse reads (GPU)",
    ),
}
USER_ERRORS = (ValueError, TypeError, OSError)  # OSError covers FileNotFoundError
# optional packages a command may import late (plots, the model loaders), by the extra holding them
EXTRAS = {
    "matplotlib": "bench",
    "transformers": "transformers",
    "safetensors": "transformers",
    "gguf": "smollm2",
    "accelerate": "smollm2",
}
DEBUG_ENV = "ATTNSIEVE_DEBUG"
# Python argument names that the shared model loader (`attnsieve.eval.models`: "spec: ...",
# "rope_scale: ...") and AttentionConfig put at the head of their messages, and the options that
# give them: a command with that option reports the error under the option's name
OPTION_OF = {
    "spec": "--model",
    "rope_scale": "--rope-scale",
    "min_prefill_length": "--min-prefill-length",
}
_HELP = ("-h", "--help")


class _UsageError(Exception):
    """A command line argparse rejects; reported in one line like every other user error."""


class _DefaultsShown(argparse.HelpFormatter):
    """Each option's help ends with its default ("(default 16)"), unless the help already says
    it or there is none to say (None, a flag's False, an empty string or list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS
        unset = unset or (isinstance(default, (str, list, tuple)) and not default)
        if unset or not action.option_strings or "default" in text:
            return text
        if isinstance(default, (list, tuple)):
            default = ",".join(map(str, default))
        shown = str(default).replace("%", "%%")  # argparse %-formats help strings
        return f"{text} (default {shown})"


class _StoreOnce(argparse._StoreAction):
    """A value option given twice: argparse would keep the last silently."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(self, "given", False):
            parser.error(f"{option_string}: given twice; give it once (the last would win)")
        self.given = True
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def error(self, message: str) -> None:  # argparse's own: usage block + line, then exit 2
        raise _UsageError(message)


def _usage(group: str | None = None) -> str:
    names = [n for n in COMMANDS if group is None or n.split()[0] == group]
    width = max(map(len, names))
    lines = [f"  attnsieve {name:<{width}}  {COMMANDS[name][1]}" for name in names]
    first = "`attnsieve COMMAND --help` lists a command's options"
    return "usage:\n" + "\n".join(lines) + f"\n\n{first}; {DEBUG_ENV}=1 shows error tracebacks."


def _groups() -> set[str]:
    """First words of the two-word commands ("bench")."""
    return {name.split()[0] for name in COMMANDS if " " in name}


def _fail(prog: str, message: object) -> int:
    text = " ".join(str(message).split()) or "failed"  # one line, whatever the message held
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in _HELP:
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    group = argv[0] if argv[0] in _groups() else None
    if group is not None and (len(argv) == 1 or argv[1] in _HELP):
        print(_usage(group), file=sys.stdout if len(argv) > 1 else sys.stderr)
        return 0 if len(argv) > 1 else 2
    words = 2 if group else 1
    name = " ".join(argv[:words])
    if name not in COMMANDS:
        if group:
            known = [n for n in COMMANDS if n.startswith(group + " ")]
        else:
            known = list(dict.fromkeys(n.split()[0] for n in COMMANDS))
        prog = f"attnsieve {group}" if group else "attnsieve"
        return _fail(prog, f"unknown command {name!r}; expected one of: {', '.join(known)}")
    return _run(name, argv[words:])


def _run(name: str, rest: list[str]) -> int:
    prog = f"attnsieve {name}"
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = _Parser(prog=prog, description=help_text, formatter_class=_DefaultsShown)
    module.add_arguments(parser)
    try:
        args = parser.parse_args(rest)
    except _UsageError as e:
        return _fail(prog, e)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    try:
        _check_device(args)
        return int(module.main(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        return _fail(prog, _option_named(parser, str(e)))
    except ModuleNotFoundError as e:  # an optional package not installed: a user error too
        package = (e.name or "").split(".")[0]
        if package not in EXTRAS or os.environ.get(DEBUG_ENV) == "1":
            raise
        return _fail(prog, f'needs {package!r}: pip install "attnsieve[{EXTRAS[package]}]"')
    except SystemExit as e:  # `raise SystemExit("message")`: a user error in the subcommand
        if isinstance(e.code, str):
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            return _fail(prog, e.code)
        return 0 if e.code is None else e.code
    except RuntimeError as e:  # torch.OutOfMemoryError: sizes the user asked for, not a bug
        if type(e).__name__ != "OutOfMemoryError" or os.environ.get(DEBUG_ENV) == "1":
            raise
        asked = str(e).split(". GPU")[0]  # "CUDA out of memory. Tried to allocate 238.42 GiB"
        return _fail(prog, f"{asked}: try shorter lengths, a smaller batch or fewer heads")


def _option_named(parser: argparse.ArgumentParser, message: str) -> str:
    """``message`` with a leading argument name of `OPTION_OF` ("spec: ...") replaced by the
    option that gave it ("--model: ..."), where the command has that option."""
    head, sep, rest = message.partition(": ")
    option = OPTION_OF.get(head)
    if sep and any(option in action.option_strings for action in parser._actions):
        return f"{option}: {rest}"
    return message


def _check_device(args: argparse.Namespace) -> None:
    """A device name torch does not know, or ``--device cuda`` where CUDA is not available: a
    user error, named, for every command."""
    device = getattr(args, "device", None)
    if not isinstance(device, str):
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:  # torch's message lists its twenty device types
        raise ValueError(f"--device: expected cpu or cuda[:N], got {device!r}") from None
    if kind not in ("cpu", "cuda"):  # meta tensors hold no data; other backends are untested
        raise ValueError(f"--device: expected cpu or cuda[:N], got {device!r}")
    index = torch.device(device).index
    if kind == "cpu" and index not in (None, 0):
        raise ValueError(f"--device: expected cpu or cuda[:N], got {device!r} (one CPU device)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device: {device} asked for, but CUDA is not available here")
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise ValueError(
            f"--device: {device} asked for, but this machine has {torch.cuda.device_count()} "
            f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
