"""`attnsieve` command line: help, dispatch, and user errors as one line on stderr with exit 2."""

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from attnsieve import cli

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def one_error_line(capsys, prog):
    """stderr holds exactly one line, ``PROG: error: ...``; returns the message part."""
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert "Traceback" not in out.err and out.out == ""
    return lines[0].removeprefix(f"{prog}: error: ")


def shell(*args, timeout=120, **env):
    """``python -m attnsieve ARGS`` in a fresh process, offline."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "attnsieve", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=full_env,
    )  # fmt: skip


@pytest.fixture
def prompt(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 4)
    return path


# ---- help and dispatch ---------------------------------------------------------------------
def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"attnsieve {name} " in out
    assert (
        "bench decode" in cli.COMMANDS and "attnsieve.bench.decode" in cli.COMMANDS["bench decode"]
    )


def test_no_arguments_prints_usage_and_exits_2(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "attnsieve demo" in out.err


@pytest.mark.parametrize("argv", [["bench", "--help"], ["bench", "-h"]])
def test_bench_help_lists_the_bench_subcommands(capsys, argv):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    listed = [line.split()[1:3] for line in out.splitlines() if line.startswith("  attnsieve")]
    assert listed == [
        ["bench", "kernels"],
        ["bench", "prefill"],
        ["bench", "e2e"],
        ["bench", "decode"],
    ]


def test_bench_alone_is_a_usage_error(capsys):
    assert cli.main(["bench"]) == 2
    assert "attnsieve bench kernels" in capsys.readouterr().err


def test_command_help_exits_0(capsys):
    assert cli.main(["run", "--help"]) == 0
    assert "--prompt-file" in capsys.readouterr().out


def test_every_command_module_has_the_interface():
    """Each table entry imports (lazily, by name) and exposes add_arguments and main."""
    import importlib

    for name, (module_name, _) in cli.COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.main), name


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_option_says_what_it_does(name):
    """`--help` is the reference a user reads first: no option is listed bare."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(cli.COMMANDS[name][0]).add_arguments(parser)
    bare = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert bare == [], f"{name}: options without help"


def test_help_shows_each_options_default_once(capsys):
    """Defaults the help text did not spell out are added; those it did are not repeated, and
    an option without one (None, a flag, an empty string) gets none."""
    assert cli.main(["bench", "decode", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "context L (default 32768,131072)" in out
    assert "timed graph replays per row (default 50)" in out
    assert "seed of the inputs (default 0) " in out and out.count("(default 0)") == 1
    assert cli.main(["bench", "prefill", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default )" not in out
    assert cli.main(["eval", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--question-in-window" in out and "(default False)" not in out


# ---- user errors: one line, exit 2 ---------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "prog", "pattern"),
    [
        (["nope"], "attnsieve", r"unknown command 'nope'; expected one of: demo, run, eval"),
        (["bench", "nope"], "attnsieve bench", r"unknown command 'bench nope'.*bench decode"),
        (["run", "--model", "m"], "attnsieve run",
         r"one of the arguments --prompt --prompt-file is required"),
        (["run", "--model", "m", "--prompt-file", "p", "--dtype", "fp8"], "attnsieve run",
         r"argument --dtype: invalid choice: 'fp8'"),
        (["run", "--model", "m", "--prompt-file", "p", "--max-new-tokens", "x"], "attnsieve run",
         r"argument --max-new-tokens: invalid int value: 'x'"),
        (["run", "--model", "m", "--prompt-file", "p", "--bogus"], "attnsieve run",
         r"unrecognized arguments: --bogus"),
        (["run", "--model", "m", "--prompt-file", "/no/such/prompt.txt"], "attnsieve run",
         r"--prompt-file: no such file: /no/such/prompt\.txt"),
        (["run", "--model", "m", "--prompt-file", str(ROOT / "tests")], "attnsieve run",
         r"--prompt-file: expected a text file, got the folder .*tests$"),
        (["calibrate", "--qk", "/no/such/qk.pt", "--device", "cpu"], "attnsieve calibrate",
         r"/no/such/qk\.pt"),
        (["run", "--model", "m", "--prompt-file", "p", "--device", "tpu"], "attnsieve run",
         r"^--device: expected cpu or cuda\[:N\], got 'tpu'$"),
        (["calibrate", "--qk", __file__, "--device", "cpu"], "attnsieve calibrate",
         r"^--qk: .* is not a file of tensors that torch\.load\(weights_only=True\) reads$"),
        (["calibrate", "--model", "m", "--length", "0", "--device", "cpu"], "attnsieve calibrate",
         r"^--length: expected a positive number of tokens, got 0"),
        (["run", "--model", "m", "--prompt-file", "p", "--device", "meta"], "attnsieve run",
         r"^--device: expected cpu or cuda\[:N\], got 'meta'"),
        (["eval", "--seed", "-1"], "attnsieve eval", r"argument --seed: expected an int in \[0, "),
        (["demo", "--seed", "-1"], "attnsieve demo", r"argument --seed: expected an int in \[0, "),
    ],
    ids=["unknown", "unknown-bench", "missing-option", "bad-choice", "bad-int", "unknown-option",
         "missing-prompt", "prompt-folder", "missing-qk-file", "unknown-device", "qk-not-torch",
         "length-0", "meta-device", "negative-seed", "negative-demo-seed"],
)  # fmt: skip
def test_user_errors_are_one_line(capsys, argv, prog, pattern):
    assert cli.main(argv) == 2
    assert re.search(pattern, one_error_line(capsys, prog))


def test_bad_option_value_checked_by_the_command(capsys, prompt):
    argv = ["run", "--model", "m", "--prompt-file", str(prompt), "--max-new-tokens", "0"]
    assert cli.main([*argv, "--device", "cpu"]) == 2
    assert one_error_line(capsys, "attnsieve run").startswith("--max-new-tokens: expected >= 1")


@NO_CUDA
@pytest.mark.parametrize("command", [["run", "--prompt-file", "p"], ["eval"], ["calibrate"]])
def test_cuda_without_cuda(capsys, command):
    argv = [command[0], "--model", "m", *command[1:], "--device", "cuda"]
    assert cli.main(argv) == 2
    message = one_error_line(capsys, f"attnsieve {command[0]}")
    assert message == "--device: cuda asked for, but CUDA is not available here"


@pytest.mark.parametrize(
    "device, pattern",
    [("cuda:3", r"^--device: cuda:3 asked for, but this machine has 1 CUDA device\(s\)"),
     ("cpu:1", r"^--device: expected cpu or cuda\[:N\], got 'cpu:1'")],
)  # fmt: skip
def test_a_device_index_the_machine_lacks(capsys, monkeypatch, device, pattern):
    """cuda:3 on a one-GPU machine ran into a 40-line traceback; cpu:1 was taken as the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli.main(["run", "--model", "m", "--prompt-file", "p", "--device", device]) == 2
    assert re.search(pattern, one_error_line(capsys, "attnsieve run"))


@pytest.mark.parametrize(
    "option, content, pattern",
    [("--config", b"[1]", r"^--config: .*cfg: expected a JSON object, got list$"),
     ("--config", b'{"prefill": "nope"}', r"^--config: .*cfg: prefill: unknown prefill method"),
     ("--prompt-file", b"\xff\xfe\x00binary", r"^--prompt-file: .*cfg is not UTF-8 text")],
)  # fmt: skip
def test_run_names_the_option_of_a_bad_file(capsys, tmp_path, prompt, option, content, pattern):
    """A bad config file's message began with its path, a binary prompt with 'utf-8' codec ...:
    neither named the option."""
    (tmp_path / "cfg").write_bytes(content)
    argv = ["run", "--model", "m", "--device", "cpu", option, str(tmp_path / "cfg")]
    if option != "--prompt-file":
        argv += ["--prompt-file", str(prompt)]
    assert cli.main(argv) == 2
    assert re.search(pattern, one_error_line(capsys, "attnsieve run"))


@pytest.mark.parametrize(
    "extra, pattern",
    [(["--method", "nope"], r"^--method: unknown prefill method 'nope'"),
     (["--kv", "nope"], r"^--kv: unknown kv method 'nope'"),
     (["--decode", "nope"], r"^--decode: unknown decode method 'nope'"),
     (["--kv", "snapkv", "--decode", "tidaldecode"], r"^--decode, --kv: TidalDecode reuses"),
     (["--config", ""], r"^--config: expected an AttentionConfig JSON file, got ''$")],
)  # fmt: skip
def test_run_names_the_option_of_a_bad_role(capsys, prompt, extra, pattern):
    """The config's errors named its fields ("kv: unknown kv method"), not run's options."""
    argv = ["run", "--model", "m", "--prompt-file", str(prompt), "--device", "cpu", *extra]
    assert cli.main(argv) == 2
    assert re.search(pattern, one_error_line(capsys, "attnsieve run"))


@pytest.mark.parametrize(
    "extra, pattern",
    [(["--model", "/no/such.gguf"], r"^--model: no such file or folder: /no/such\.gguf$"),
     (["--model", "probe", "--rope-scale", "0.5"], r"^--rope-scale: expected a finite number >= 1"),
     (["--model", "probe", "--min-prefill-length", "0"],
      r"^--min-prefill-length: expected an int >= 1, got 0$")],
)  # fmt: skip
@pytest.mark.parametrize("command", ["run", "eval"])
def test_the_model_loader_s_errors_name_the_option(capsys, prompt, command, extra, pattern):
    """The shared loader and AttentionConfig name their Python arguments ("spec: no such file or
    folder", "rope_scale: ..."): the command line said so, where the user typed --model."""
    argv = [command, *extra, "--device", "cpu"]
    if command == "run":
        argv += ["--prompt-file", str(prompt)]
    assert cli.main(argv) == 2
    assert re.search(pattern, one_error_line(capsys, f"attnsieve {command}"))


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, where no folder can be made")
def test_demo_refuses_an_out_folder_it_cannot_make_before_the_model_loads(capsys, monkeypatch):
    """Run as root, check_out's access test passed /proc/...: the demo ran its two minutes and
    failed at the plot with "[Errno 2] No such file or directory", naming no option."""
    from attnsieve.eval import models

    def load_model(*args, **kwargs):
        raise AssertionError("the model loaded before --out was checked")

    text_config = types.SimpleNamespace(
        max_position_embeddings=8192, num_hidden_layers=30, num_attention_heads=9
    )
    monkeypatch.setattr(models, "smollm2_path", lambda: Path("SmolLM2.gguf"))
    monkeypatch.setattr(models, "model_text_config", lambda *args: text_config)
    monkeypatch.setattr(models, "load_model", load_model)
    assert cli.main(["demo", "--out", "/proc/attnsieve-no-such/out"]) == 2
    assert one_error_line(capsys, "attnsieve demo").startswith("--out: ")


def test_out_of_device_memory_is_one_line(capsys, monkeypatch):
    """Sizes past the GPU's memory (bench kernels --lengths 1000000000) are the user's to change:
    one line, not torch's traceback."""
    from attnsieve.bench import kernels

    def allocate(args):
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 238.42 GiB. GPU 0 has a total capacity of 139"
        )

    monkeypatch.setattr(kernels, "main", allocate)
    assert cli.main(["bench", "kernels"]) == 2
    message = one_error_line(capsys, "attnsieve bench kernels")
    assert message.startswith("CUDA out of memory. Tried to allocate 238.42 GiB: try shorter")


@NO_CUDA
@pytest.mark.parametrize("bench", ["kernels", "decode"])
def test_gpu_benchmark_without_cuda(capsys, bench):
    """A benchmark's ``raise SystemExit("message")`` is reported like any user error (bench
    decode printed its own line, without the ``error:``)."""
    assert cli.main(["bench", bench]) == 2
    assert "CUDA" in one_error_line(capsys, f"attnsieve bench {bench}")


# ---- the central handler: which exceptions are user errors ---------------------------------
@pytest.fixture
def fake_command(monkeypatch):
    """Register `attnsieve fake`, whose main raises what ``holder['error']`` holds."""
    holder = {}
    module = types.ModuleType("attnsieve_fake_cmd")
    module.add_arguments = lambda parser: parser.add_argument("--x", type=int, default=0)

    def main(args):
        raise holder["error"]

    module.main = main
    monkeypatch.setitem(sys.modules, "attnsieve_fake_cmd", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("attnsieve_fake_cmd", "a test command"))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    return holder


@pytest.mark.parametrize(
    "error",
    [
        ValueError("--x: expected something\nsecond line"),
        TypeError("config: expected an AttentionConfig"),
        FileNotFoundError(2, "No such file or directory", "a.json"),
        OSError("disk full"),
        SystemExit("needs a CUDA GPU"),
    ],
    ids=["ValueError", "TypeError", "FileNotFoundError", "OSError", "SystemExit-message"],
)
def test_user_error_types_exit_2(fake_command, capsys, error):
    fake_command["error"] = error
    assert cli.main(["fake"]) == 2
    message = one_error_line(capsys, "attnsieve fake")
    assert message == " ".join(str(error.code if isinstance(error, SystemExit) else error).split())


def test_debug_env_reraises_for_the_traceback(fake_command, monkeypatch):
    fake_command["error"] = ValueError("--x: bad")
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="--x: bad"):
        cli.main(["fake"])


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--model", "probe", "--lengths", "0"],
        ["bench", "e2e", "--lengths", "0"],
        ["run", "--model", "probe", "--prompt-file", "/nonexistent/prompt.txt"],
        ["calibrate", "--model", "probe", "--target-recall", "2"],
    ],
    ids=["eval", "bench-e2e", "run", "calibrate"],
)
def test_every_command_s_user_error_reaches_the_debug_env(argv, monkeypatch):
    """eval and bench e2e printed their argument errors themselves, so ATTNSIEVE_DEBUG=1 showed
    no traceback for them: every command now leaves them to the CLI."""
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ValueError):
        cli.main(argv)


@pytest.mark.parametrize("error", [RuntimeError("bug"), KeyError("bug"), AssertionError("bug")])
def test_bugs_are_not_swallowed(fake_command, error):
    fake_command["error"] = error
    with pytest.raises(type(error)):
        cli.main(["fake"])


def test_a_missing_optional_package_names_its_extra(fake_command, capsys):
    """`eval` and `bench e2e` plot with matplotlib, which only the bench extra installs."""
    fake_command["error"] = ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    assert cli.main(["fake"]) == 2
    message = one_error_line(capsys, "attnsieve fake")
    assert message == "needs 'matplotlib': pip install \"attnsieve[bench]\""


def test_a_missing_module_of_no_extra_is_a_bug(fake_command):
    fake_command["error"] = ModuleNotFoundError(
        "No module named 'attnsieve.gone'", name="attnsieve.gone"
    )
    with pytest.raises(ModuleNotFoundError):
        cli.main(["fake"])


def test_exit_codes_pass_through(fake_command):
    fake_command["error"] = SystemExit(3)
    assert cli.main(["fake"]) == 3
    fake_command["error"] = SystemExit(None)
    assert cli.main(["fake"]) == 0


# ---- in a fresh process ----------------------------------------------------------------------
def test_python_m_attnsieve_missing_prompt_no_traceback():
    result = shell("run", "--model", "m", "--prompt-file", "/no/such/prompt.txt")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "attnsieve run: error: --prompt-file: no such file: /no/such/prompt.txt"
    )


def test_python_m_attnsieve_nonexistent_model_path(prompt):
    result = shell(
        "run", "--model", "/no/such/model", "--prompt-file", str(prompt), "--device", "cpu"
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("attnsieve run: error: ") and "/no/such/model" in lines[0]


def test_run_with_the_probe_model_offline(prompt):
    result = shell(
        "run", "--model", "probe", "--prompt-file", str(prompt), "--device", "cpu",
        "--dtype", "fp32", "--max-new-tokens", "4", "--method", "streaming",
        "--min-prefill-length", "16", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "time to first token:" in result.stdout and "mean density per layer:" in result.stdout


def test_calibrate_qk_of_other_things_is_one_line(capsys, tmp_path):
    path = tmp_path / "qk_ints.pt"
    torch.save([(1, 2)], path)
    assert cli.main(["calibrate", "--qk", str(path), "--device", "cpu"]) == 2
    assert one_error_line(capsys, "attnsieve calibrate") == (
        "--qk: layer 0: expected a (q, k) pair of tensors"
    )


def test_an_empty_prompt_is_refused():
    from attnsieve.integrations.generate import generate
    from attnsieve.integrations.handle import PatchStats
    from tests.test_integration_transformers import build

    with pytest.raises(ValueError, match="^input_ids: the prompt has no tokens"):
        generate(build("llama"), torch.zeros(1, 0, dtype=torch.long), 4, 16, set(), PatchStats(2))


@pytest.mark.parametrize(
    "argv, option",
    [
        (["eval", "--model", "probe", "--methods", "streaming", "--methods", "dense"], "--methods"),
        (["run", "--model", "m", "--prompt-file", "p", "--kv", "snapkv", "--kv=none"], "--kv"),
        (["demo", "--length", "1024", "--length", "2048"], "--length"),
    ],
)
def test_a_value_option_given_twice_is_refused(capsys, argv, option):
    """argparse keeps the last of two: `--methods streaming --methods dense` ran dense alone."""
    assert cli.main(argv) == 2
    message = one_error_line(capsys, "attnsieve " + argv[0])
    assert message == f"{option}: given twice; give it once (the last would win)"
