"""Every `attnsieve` command in the README's code blocks parses with today's options: the docs
name no option that was renamed or removed, inline commands and options included; every method of
the registries and every precision is listed."""

import argparse
import importlib
import re
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


def parser_of(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"attnsieve {name}", exit_on_error=False)
    importlib.import_module(cli.COMMANDS[name][0]).add_arguments(parser)
    return parser


def prose() -> str:
    """The README without its fenced blocks, whose commands are parsed whole above."""
    return re.sub(r"```.*?```", "", README.read_text(), flags=re.S)


def test_an_inline_command_names_only_its_command_s_options():
    """Inline `attnsieve ...` spans are often fragments (no required options): each names a
    command, and options of that command only."""
    groups = {n.split()[0] for n in cli.COMMANDS if " " in n}
    spans = re.findall(r"`(attnsieve [^`]+)`", prose())
    assert len(spans) >= 5
    for span in spans:
        argv = shlex.split(" ".join(span.split()))[1:]
        if argv[0].isupper():  # `attnsieve COMMAND --help`
            continue
        words = 2 if argv[0] in groups else 1
        name = " ".join(argv[:words])
        assert name in cli.COMMANDS, f"{span}: unknown command {name!r}"
        options = parser_of(name)._option_string_actions
        unknown = [a for a in argv if a.startswith("--") and a.split("=")[0] not in options]
        assert unknown == [], f"{span}: not options of attnsieve {name}"


def test_every_option_the_readme_names_exists():
    known = {"--no-deps"}  # pip's
    for name in cli.COMMANDS:
        known |= set(parser_of(name)._option_string_actions)
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README.read_text()))
    assert sorted(named - known) == []


def test_every_method_and_precision_is_listed():
    from attnsieve.integrations.config import PRECISIONS
    from attnsieve.methods.decode import SELECTORS
    from attnsieve.methods.kv import POLICIES
    from attnsieve.methods.prefill import PLANNERS

    text = README.read_text()
    for role, names in (("planner", PLANNERS), ("KV policy", POLICIES),
                        ("decode selector", SELECTORS), ("precision", PRECISIONS)):  # fmt: skip
        missing = [name for name in names if f"`{name}`" not in text]
        assert missing == [], f"{role}s missing from the README"
