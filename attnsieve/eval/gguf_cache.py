"""A GGUF model converted once into a transformers folder, so that later loads skip the parse.

transformers reads a GGUF file's metadata with gguf-py one field at a time, and a load parses the
file three times (config, weights, tokenizer): SmolLM2-135M-Instruct took 53 s to load on a
2-core CPU, of which the dequantization was about 5 s. The first load of a GGUF file loads it
as transformers does (as long as before), writes the dequantized float32 weights (safetensors),
the config, the generation config and the tokenizer into a folder of the cache, checks that the
folder loads back to the same weights, config, tokens and chat template, and only then marks it
done. Later loads read that folder (0.8 s there). The folder is named by the file's path, size
and modification time and by the transformers version, so a changed file or another transformers
converts anew.

The cache lives in ``$ATTNSIEVE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/attnsieve``, else
``~/.cache/attnsieve``); SmolLM2's folder takes 517 MB. An empty ``ATTNSIEVE_CACHE_DIR`` turns the
cache off, and a cache that cannot be written is skipped with a warning: every load then parses
the file, as transformers does. So is a folder that did not load back as the file does, which
leaves a ``.failed`` note beside it so that later loads do not convert again (delete the note to
retry). Each conversion removes the folders that no load can reach again: those whose file has
changed or gone (a clone's virtual environment deleted, a file downloaded anew; also a file on a
drive not mounted now), those of cache format 1 (before the marker recorded the file) and those
a crash left unfinished. A folder of another transformers version or cache format stays while
its file is unchanged (another environment may load it). Processes that load the same file at
once convert it once: the others wait on a lock file, and a folder whose lock is held is never
removed.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

CACHE_ENV = "ATTNSIEVE_CACHE_DIR"
FORMAT = 2  # the folder's layout: a new one converts every file anew (2: the marker's JSON)
# written last, once the folder has loaded back as the file did: the source (`_source`) as JSON
DONE = "attnsieve-converted"
GGUF_MAGIC = b"GGUF"  # every GGUF file's first bytes
FOLDER_NAME = re.compile(r".+-[0-9a-f]{16}")  # a file's stem and its key's hash
# what the folder may change in a config: where it came from, the GGUF quantizer's record, and
# the dtype, which each load sets
CONFIG_KEYS_LEFT_OUT = ("_name_or_path", "quantization_config", "transformers_version", "dtype")
# the tokenizer is checked on a sample that reaches bytes, merges, special tokens and the template
TOKENIZER_SAMPLE = "The passkey is 68391. Remember it!\n\tünïcödé 東京 🙂  <|im_end|>"


def cache_root() -> Path | None:
    """The cache folder, or None when ``$ATTNSIEVE_CACHE_DIR`` is set empty (no cache) or there
    is no home folder to put it in."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return Path(env).expanduser() if env else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    try:
        return (Path(xdg) if xdg else Path.home() / ".cache") / "attnsieve"
    except RuntimeError:  # no $HOME and no passwd entry
        return None


def converted_folder(gguf: Path) -> Path | None:
    """The transformers folder of ``gguf``'s model, converted now if the cache lacks it; None when
    the cache is off, cannot be used, or once held a folder that did not load back as the file
    does (a warning says which). A file that does not start as GGUF files do raises ValueError
    before any conversion is announced; one that does but is no model raises what transformers
    raises."""
    root = cache_root()
    if root is None:
        return None
    with open(gguf, "rb") as file:
        if file.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ValueError(f"{gguf} does not start with the GGUF magic bytes {GGUF_MAGIC!r}")
    source = _source(gguf)
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
    folder = root / "gguf" / f"{gguf.stem}-{key}"
    failed = folder.with_name(folder.name + ".failed")
    try:
        if (folder / DONE).is_file():
            return folder
        if failed.is_file():  # converting again would fail again, at a minute a load
            _cannot_use(root, gguf, failed.read_text().strip())
            return None
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = open(folder.with_name(folder.name + ".lock"), "w")  # noqa: SIM115 (held below)
    except OSError as e:
        _cannot_use(root, gguf, e)
        return None
    with lock, _locked(lock, gguf):
        if (folder / DONE).is_file():  # another process converted it while this one waited
            return folder
        print(
            f"attnsieve: converting {gguf.name} once into {folder} (a minute on a CPU; later "
            "loads read that folder)",
            file=sys.stderr,
        )
        model, tokenizer = _load_gguf(gguf)
        try:
            _write(model, tokenizer, folder, source)
        except RuntimeError as e:  # the folder did not load back as the file does
            failed.write_text(f"{e}\n")
            _cannot_use(root, gguf, e)
            return None
        except (OSError, ValueError, SafetensorError) as e:  # a full disk, a folder unreadable
            _cannot_use(root, gguf, e)
            return None
    try:
        prune(folder.parent, keep=folder)
    except OSError as e:  # the cleanup: never a reason to fail the load
        warnings.warn(f"{CACHE_ENV}: could not remove old folders of {root}: {e}", stacklevel=2)
    return folder


def _source(gguf: Path) -> dict[str, Any]:
    """What a folder is converted from: the file (path, size, modification time), the
    transformers that read it and the cache's format; a change in any converts anew."""
    import transformers

    stat = gguf.stat()
    return {"format": FORMAT, "gguf": str(gguf.resolve()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "transformers": transformers.__version__}  # fmt: skip


def prune(folders: Path, keep: Path) -> None:
    """Remove the converted folders in ``folders`` that no load can reach again (`_unreachable`)
    and the partial ones of killed conversions, but not ``keep`` (the folder just converted) nor
    any whose lock another process holds (converting it, or waiting to); say on stderr how much
    that freed. Lock files stay (empty): one unlinked while another process has it open would let
    a third take a second lock on a new file of the same name."""
    removed, freed = 0, 0
    for path in sorted(folders.iterdir()):
        name, partial, _ = path.name.partition(".partial-")  # partial: "" for a folder
        if path == keep or not (FOLDER_NAME.fullmatch(name) and path.is_dir()):
            continue
        if not (partial or _unreachable(path / DONE)):
            continue
        with open(path.with_name(name + ".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
            removed, freed = removed + 1, freed + size
    if removed:
        print(
            f"attnsieve: removed {removed} converted model folder(s) that no load can reach again "
            f"(GGUF file changed or gone, no readable marker, killed conversion): "
            f"{freed / 2**20:.0f} MiB freed in {folders}",
            file=sys.stderr,
        )


def _unreachable(marker: Path) -> bool:
    """Whether no load can reach the folder of ``marker`` again: it has no marker (a crash
    before it), one that is not JSON (cache format 1's), or its file has changed or is gone
    (a file on a drive not mounted now reads as gone). A folder of another cache format or
    transformers version stays while its file is unchanged (another environment may load it),
    and so does one whose file cannot be read for another reason (permissions)."""
    try:
        source = json.loads(marker.read_text())
        stat = Path(source["gguf"]).stat()
        return (stat.st_size, stat.st_mtime_ns) != (source["size"], source["mtime_ns"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):  # gone, or format 1's marker
        return True
    except OSError:
        return False


def _load_gguf(gguf: Path) -> tuple[Any, Any]:
    """The file's model (float32, on the CPU) and tokenizer, as transformers reads them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf.parent, gguf.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=name)


def _write(model: Any, tokenizer: Any, folder: Path, source: dict[str, Any]) -> None:
    """``model`` and ``tokenizer`` into ``folder``, through a temporary folder beside it that is
    renamed once it loads back as they are (`check_folder`); the marker, ``source`` as JSON, is
    written last."""
    from safetensors.torch import save_model

    for left in folder.parent.glob(f"{folder.name}.partial-*"):  # by a killed conversion
        shutil.rmtree(left, ignore_errors=True)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    partial.mkdir()
    try:
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):  # a float folder, not a quantized model
            del config.quantization_config
        config.save_pretrained(partial)
        model.generation_config.save_pretrained(partial)
        save_model(model, str(partial / "model.safetensors"))  # tied weights stored once
        tokenizer.save_pretrained(partial)
        check_folder(model, tokenizer, partial)
        shutil.rmtree(folder, ignore_errors=True)  # a folder left by a crash, never marked done
        partial.rename(folder)
        (folder / DONE).write_text(json.dumps(source, indent=1) + "\n")
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def check_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """Raise RuntimeError unless ``folder`` loads back to ``model``'s weights (bit for bit) and
    config, and to ``tokenizer``'s tokens and chat template on `TOKENIZER_SAMPLE`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    want, got = model.state_dict(), loaded.state_dict()
    differ = sorted(set(want) ^ set(got)) or [k for k in want if not torch.equal(want[k], got[k])]
    if differ:
        raise RuntimeError(f"{folder}: weights differ from the GGUF file's: {differ[:3]}")
    want_config, got_config = (_plain_config(m.config) for m in (model, loaded))
    if want_config != got_config:
        keys = sorted(k for k in want_config.keys() | got_config.keys()
                      if want_config.get(k) != got_config.get(k))  # fmt: skip
        raise RuntimeError(f"{folder}: config differs from the GGUF file's in {keys}")
    reloaded = AutoTokenizer.from_pretrained(folder)
    chat = [{"role": "user", "content": TOKENIZER_SAMPLE}]
    for name, use in (("tokens", lambda t: t(TOKENIZER_SAMPLE).input_ids),
                      ("chat template", lambda t: _chat(t, chat))):  # fmt: skip
        if use(tokenizer) != use(reloaded):
            raise RuntimeError(f"{folder}: the tokenizer's {name} differ from the GGUF file's")


def _plain_config(config: Any) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in CONFIG_KEYS_LEFT_OUT}


def _chat(tokenizer: Any, chat: list[dict]) -> str | None:
    """The chat template's text, or None for a tokenizer without one (in both, then: equal)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


@contextlib.contextmanager
def _locked(lock: Any, gguf: Path) -> Iterator[None]:
    """Hold an exclusive lock on the open file ``lock``, saying so when another process has it."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"attnsieve: waiting for another process converting {gguf.name}", file=sys.stderr)
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _cannot_use(root: Path, gguf: Path, why: object) -> None:
    warnings.warn(
        f"{CACHE_ENV}: cannot use the model cache in {root} ({why}); {gguf.name} is parsed "
        f"again on every load (set {CACHE_ENV} to a writable folder, or empty to turn this off)",
        stacklevel=3,
    )


if __name__ == "__main__":  # `make`'s install step: SmolLM2's file converted before the demo runs
    from attnsieve.eval.models import smollm2_path

    folder = converted_folder(smollm2_path())
    print(f"SmolLM2-135M-Instruct: {folder or 'no cache: parsed on every load'}")
