"""Every `attnsieve` command in the README's code blocks parses with today's options: the docs
name no option that was renamed or removed."""

import argparse
import importlib
import shlex
from pathlib import Path

import pytest

from attnsieve import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """The argv of each `attnsieve ...` line in a fenced block, continuation lines joined."""
    commands, in_block, pending = [], False, ""
    for line in README.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        text = (pending + " " + line.strip()) if pending else line.strip()
        if text.endswith("\\"):
            pending = text[:-1]
            continue
        pending = ""
        if text.startswith("attnsieve "):
            commands.append(shlex.split(text, comments=True)[1:])
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 5


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_a_readme_command_parses(argv):
    words = 2 if argv[0] in {n.split()[0] for n in cli.COMMANDS if " " in n} else 1
    name = " ".join(argv[:words])
    assert name in cli.COMMANDS, f"the README runs an unknown command {name!r}"
    parser = argparse.ArgumentParser(prog=f"attnsieve {name}", exit_on_error=False)
    importlib.import_module(cli.COMMANDS[name][0]).add_arguments(parser)
    try:
        parser.parse_args(argv[words:])
    except (argparse.ArgumentError, SystemExit) as e:
        pytest.fail(f"attnsieve {' '.join(argv)}: {e}")
