"""The GGUF conversion cache (`attnsieve.eval.gguf_cache`) on a tiny random Llama standing in
for the file's model: a first load converts, later loads read the folder, a folder that does not
load back is never used, and a cache that cannot be written leaves loading as it was."""

import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")
import torch  # noqa: E402

from attnsieve.eval import gguf_cache  # noqa: E402

CHAT = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"


def _tiny_model_and_tokenizer(chat_template=CHAT):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True,
    )  # fmt: skip
    bytes_ = pre_tokenizers.ByteLevel.alphabet()
    bpe = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(bytes_))}, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe)
    tokenizer.chat_template = chat_template
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.fixture
def gguf(tmp_path, monkeypatch):
    """A file standing in for a GGUF model, the cache in tmp_path, and the conversions made."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "cache"))
    loads = []

    def load(file):
        loads.append(file)
        return _tiny_model_and_tokenizer()

    monkeypatch.setattr(gguf_cache, "_load_gguf", load)
    return path, loads


def test_the_first_load_converts_and_later_loads_read_the_folder(gguf, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, loads = gguf
    folder = gguf_cache.converted_folder(path)
    assert loads == [path] and "converting model.gguf once" in capsys.readouterr().err
    assert (folder / gguf_cache.DONE).is_file()
    assert folder.parent.parent == gguf_cache.cache_root()
    assert gguf_cache.converted_folder(path) == folder and len(loads) == 1
    assert capsys.readouterr().err == ""
    model, tokenizer = _tiny_model_and_tokenizer()
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert not hasattr(loaded.config, "quantization_config")
    assert AutoTokenizer.from_pretrained(folder)("x ü").input_ids == tokenizer("x ü").input_ids
    assert [p.name for p in folder.parent.iterdir() if ".partial" in p.name] == []


def test_a_changed_file_converts_anew_and_its_old_folder_goes(gguf, capsys):
    path, loads = gguf
    first = gguf_cache.converted_folder(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = gguf_cache.converted_folder(path)
    assert second != first and len(loads) == 2 and (second / gguf_cache.DONE).is_file()
    names = sorted(p.name for p in first.parent.iterdir())
    assert names == sorted([first.name + ".lock", second.name, second.name + ".lock"])
    assert "removed 1 converted model folder(s)" in capsys.readouterr().err


def test_the_folder_just_converted_stays_when_its_file_changed_meanwhile(gguf, monkeypatch):
    """The file touched during its conversion (the folder's key was taken before): the folder
    returned is still there, marked done, not removed as stale by the cleanup after it."""
    path, loads = gguf

    def touching(file):
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        return _tiny_model_and_tokenizer()

    monkeypatch.setattr(gguf_cache, "_load_gguf", touching)
    folder = gguf_cache.converted_folder(path)
    assert (folder / gguf_cache.DONE).is_file()


def test_a_cleanup_that_fails_warns_and_the_load_goes_on(gguf, monkeypatch):
    path, loads = gguf

    def failing(folders, keep):
        raise PermissionError(13, "Permission denied", str(folders))

    monkeypatch.setattr(gguf_cache, "prune", failing)
    with pytest.warns(UserWarning, match="could not remove old folders .*Permission denied"):
        folder = gguf_cache.converted_folder(path)
    assert (folder / gguf_cache.DONE).is_file()


def _stand_in_folder(gguf_dir, name, marker=None):
    """A converted folder named ``name`` in ``gguf_dir``, with ``marker`` as its DONE file."""
    folder = gguf_dir / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(1000))
    if marker is not None:
        (folder / gguf_cache.DONE).write_text(marker)
    return folder


def test_a_conversion_removes_only_the_folders_no_load_can_reach(gguf, tmp_path, monkeypatch):
    """Kept: a folder of another transformers version or cache format whose file is unchanged
    (another environment may load it), one whose lock another process holds, one whose file
    cannot be read now, and files that are not the cache's. Removed: a folder whose file is gone,
    one of format 1, one with a marker that names no file's size, one without its marker, and a
    partial one whose conversion is not running. Lock files stay."""
    import transformers

    path, loads = gguf
    gone = tmp_path / "gone.gguf"
    gone.write_bytes(b"GGUF")
    gone_folder = gguf_cache.converted_folder(gone)
    monkeypatch.setattr(transformers, "__version__", "0.0.1")
    other_version = gguf_cache.converted_folder(path)
    monkeypatch.undo()
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_cache, "_load_gguf", lambda file: _tiny_model_and_tokenizer())
    gone.unlink()
    folders = gone_folder.parent
    format_1 = _stand_in_folder(folders, "old-0123456789abcdef", "format 1\n")
    no_marker = _stand_in_folder(folders, "crashed-0123456789abcdef")
    partial = _stand_in_folder(folders, "killed-0123456789abcdef.partial-99999999")
    locked = _stand_in_folder(folders, "locked-0123456789abcdef", "format 1\n")
    newer = json.loads((other_version / gguf_cache.DONE).read_text()) | {"format": 99}
    newer_format = _stand_in_folder(folders, "newer-0123456789abcdef", json.dumps(newer))
    sizeless = newer | {"format": gguf_cache.FORMAT}
    del sizeless["size"]
    malformed = _stand_in_folder(folders, "malformed-0123456789abcdef", json.dumps(sizeless))
    changed_if_read = dict(
        format=gguf_cache.FORMAT, gguf=str(tmp_path / "unreadable.gguf"), size=0, mtime_ns=0,
        transformers=transformers.__version__,
    )  # fmt: skip
    (tmp_path / "unreadable.gguf").write_bytes(b"GGUF")
    unreadable = _stand_in_folder(
        folders, "unreadable-0123456789abcdef", json.dumps(changed_if_read)
    )
    stranger = _stand_in_folder(folders, "notes")
    stat = Path.stat

    def denied(self, **kwargs):
        if self.name == "unreadable.gguf":
            raise PermissionError(13, "Permission denied", str(self))
        return stat(self, **kwargs)

    (tmp_path / "new.gguf").write_bytes(b"GGUF")
    with open(folders / (locked.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        monkeypatch.setattr(Path, "stat", denied)
        new = gguf_cache.converted_folder(tmp_path / "new.gguf")
    kept = {p.name for p in folders.iterdir() if p.is_dir()}
    assert kept == {new.name, other_version.name, newer_format.name, locked.name,
                    unreadable.name, stranger.name}  # fmt: skip
    assert not {gone_folder, format_1, malformed, no_marker, partial} & set(folders.iterdir())
    assert (folders / (gone_folder.name + ".lock")).is_file()


def test_a_running_conversions_partial_folder_stays(gguf, tmp_path):
    path, loads = gguf
    folders = tmp_path / "cache" / "gguf"
    partial = _stand_in_folder(folders, "busy-0123456789abcdef.partial-99999999")
    with open(folders / "busy-0123456789abcdef.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        gguf_cache.converted_folder(path)
    assert partial.is_dir()


def test_an_empty_variable_turns_the_cache_off(gguf, monkeypatch):
    path, loads = gguf
    monkeypatch.setenv(gguf_cache.CACHE_ENV, "")
    assert gguf_cache.cache_root() is None
    assert gguf_cache.converted_folder(path) is None and loads == []


def test_the_default_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(gguf_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert gguf_cache.cache_root() == tmp_path / "attnsieve"


def test_a_cache_that_cannot_be_written_warns_and_loads_as_before(gguf, monkeypatch, tmp_path):
    path, loads = gguf
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(blocked / "cache"))  # under a file: no folder
    with pytest.warns(UserWarning, match=f"^{gguf_cache.CACHE_ENV}: cannot use the model cache"):
        assert gguf_cache.converted_folder(path) is None
    assert loads == []  # found before the file was parsed


def test_a_folder_that_does_not_load_back_is_never_used(gguf, monkeypatch):
    """Weights written wrong (one element changed on its way to disk): the check that reloads the
    folder refuses it and the load warns; a note beside it keeps later loads from converting
    again (a minute each) until it is deleted."""
    import safetensors.torch

    path, loads = gguf
    save = safetensors.torch.save_model

    def corrupting(model, file):
        with torch.no_grad():
            model.model.norm.weight[0] += 1
        save(model, file)
        with torch.no_grad():
            model.model.norm.weight[0] -= 1

    monkeypatch.setattr(safetensors.torch, "save_model", corrupting)
    with pytest.warns(UserWarning, match=r"weights differ from the GGUF file's: \['model.norm"):
        assert gguf_cache.converted_folder(path) is None
    names = sorted(p.suffix for p in (gguf_cache.cache_root() / "gguf").iterdir())
    assert names == [".failed", ".lock"]  # no folder, no partial one
    monkeypatch.setattr(safetensors.torch, "save_model", save)
    with pytest.warns(UserWarning, match="weights differ"):
        assert gguf_cache.converted_folder(path) is None
    assert len(loads) == 1  # not converted again
    next((gguf_cache.cache_root() / "gguf").glob("*.failed")).unlink()
    assert gguf_cache.converted_folder(path) is not None and len(loads) == 2


def test_a_full_disk_warns_and_a_later_load_converts_again(gguf, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    path, loads = gguf
    save = safetensors.torch.save_model

    def full(model, file):
        raise SafetensorError("No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_model", full)
    with pytest.warns(UserWarning, match=r"cannot use the model cache .*No space left"):
        assert gguf_cache.converted_folder(path) is None
    monkeypatch.setattr(safetensors.torch, "save_model", save)
    assert gguf_cache.converted_folder(path) is not None and len(loads) == 2


def test_an_unreadable_cache_warns_before_parsing(gguf, monkeypatch):
    """A cache folder this user cannot enter (is_file raises PermissionError): the load goes on
    without the cache (it had ended in a traceback, in make's install step too)."""
    path, loads = gguf

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "is_file", denied)
    with pytest.warns(UserWarning, match="cannot use the model cache .*Permission denied"):
        assert gguf_cache.converted_folder(path) is None
    assert loads == []


def test_a_partial_folder_left_by_a_killed_conversion_goes(gguf):
    path, loads = gguf
    folder = gguf_cache.converted_folder(path)
    (folder / gguf_cache.DONE).unlink()  # as if killed before its marker
    left = folder.with_name(folder.name + ".partial-99999999")
    (left / "sub").mkdir(parents=True)
    assert gguf_cache.converted_folder(path) == folder and len(loads) == 2
    assert not left.exists() and (folder / gguf_cache.DONE).is_file()


@pytest.mark.parametrize("change", ["weights", "config", "tokens", "chat template"])
def test_the_check_sees_each_part(tmp_path, change):
    model, tokenizer = _tiny_model_and_tokenizer()
    folder = tmp_path / "folder"
    gguf_cache._write(model, tokenizer, folder, {"format": gguf_cache.FORMAT})
    gguf_cache.check_folder(model, tokenizer, folder)  # as written: passes
    if change == "weights":
        with torch.no_grad():
            model.lm_head.weight[3, 2] += 1e-6  # tied: the embedding too
    elif change == "config":
        model.config.rms_norm_eps = 1e-5
    elif change == "tokens":
        tokenizer.add_tokens(["passkey"])
    else:
        tokenizer.chat_template = CHAT.replace("<", "[")
    with pytest.raises(RuntimeError, match=change):
        gguf_cache.check_folder(model, tokenizer, folder)


def test_a_second_process_waits_for_the_conversion(gguf, capsys):
    """Another process holds the lock (converting): the load waits, says so once, and then reads
    the folder that process marked done, without converting it again."""
    path, loads = gguf
    folder = gguf_cache.converted_folder(path)
    (folder / gguf_cache.DONE).unlink()  # as if the other process were still writing it
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        got = []
        waiter = threading.Thread(target=lambda: got.append(gguf_cache.converted_folder(path)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not got
        (folder / gguf_cache.DONE).write_text("format 1\n")  # the other process finishes
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(timeout=30)
    assert got == [folder] and len(loads) == 1
    assert "waiting for another process converting model.gguf" in capsys.readouterr().err


def test_a_file_that_is_no_gguf_fails_before_any_conversion_is_announced(gguf, capsys):
    path, loads = gguf
    path.write_text("not a model")
    with pytest.raises(ValueError, match=r"does not start with the GGUF magic bytes b'GGUF'"):
        gguf_cache.converted_folder(path)
    assert loads == [] and capsys.readouterr().err == ""
    assert not gguf_cache.cache_root().exists()  # no folder, no lock file left behind
