"""The package's import graph follows the README's "Layout of the code": dependencies point down,
kernels import no method, api or integration, and nothing but the CLI entry imports a CLI module.

Every module under attnsieve/ is parsed with `ast` (nothing is imported). An import counts wherever
it is written, in a function body too (a lazy import is still a dependency); only imports under
``if TYPE_CHECKING:`` are left out, as they never run.
"""

import ast
from pathlib import Path

import pytest

from attnsieve import cli

PACKAGE = Path(__file__).resolve().parents[1] / "attnsieve"

# "Dependencies point down": a module may import its own group and any lower rank.
RANKS = [
    ("checks",),
    ("layout", "layout_checks", "layout_counts", "layout_spans"),  # the plan type kernels execute
    ("kernels",),  # "api -> kernels -> checks"
    # "methods -> layout/cache/api"
    ("views", "cache", "cache_compact", "cache_pages", "cache_reference"),
    ("api",),
    ("methods",),
    ("integrations",),  # "integrations -> methods"
    ("eval", "bench", "demo", "run"),  # "eval/bench -> everything"
    ("cli", "__main__"),
]
# CLI modules: only the CLI entry imports them, by name through importlib. eval.harness and
# eval.calibrate also back `attnsieve eval|calibrate` but are libraries too (the probe trainer and
# bench e2e use them), so they are held to the layering only.
CLI_ENTRY = {"attnsieve.cli", "attnsieve.__main__"}
CLI_MODULES = CLI_ENTRY | {
    module for module, _ in cli.COMMANDS.values() if not module.startswith("attnsieve.eval.")
}
# Known violations: strict xfails, so that a fix shows (none left).
KNOWN: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, source: str | None = None) -> set[str]:
    """attnsieve modules that ``module`` imports at run time (``from a import b`` names a.b when
    b is a module, else a); ``source`` stands in for the module's file when given."""
    path = MODULES.get(module, PACKAGE / "_.py")
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    skip = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node)
        for sub in ast.walk(ast.Module(body=node.body, type_ignores=[]))
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = (
                    module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                )
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""])
            else:
                base = node.module or ""
            base = base.rstrip(".")
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
            found |= subs or {base}
    return {name for name in found if name == "attnsieve" or name.startswith("attnsieve.")}


def upward(module: str, source: str | None = None) -> list[str]:
    """The imports of ``module`` that point up the layers of `RANKS`."""
    mine, group = rank(module), module.split(".")[1]
    return sorted(
        name
        for name in imports(module, source) - {"attnsieve"}
        if name.split(".")[1] != group and rank(name) > mine
    )


def rank(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, group in enumerate(RANKS) if top in group)


def _params():
    for module in MODULES:
        if module in KNOWN:
            yield pytest.param(module, marks=pytest.mark.xfail(strict=True, reason=KNOWN[module]))
        else:
            yield module


def test_the_parser_sees_the_package():
    assert {"attnsieve.api", "attnsieve.kernels.prefill", "attnsieve.cli"} <= set(MODULES)
    assert "attnsieve.layout" in imports("attnsieve.kernels.prefill")
    assert "attnsieve.kernels.prefill_reference" in imports("attnsieve.api.prefill")
    # a lazy import inside a function counts; one under TYPE_CHECKING does not
    assert "attnsieve.kernels.prefill" in imports("attnsieve.api.prefill")
    assert "attnsieve.cache" in imports("attnsieve.api.decode")
    assert "attnsieve.views" in imports("attnsieve.api.decode")  # lazy, and under TYPE_CHECKING
    assert "attnsieve.methods.decode.base" not in imports("attnsieve.api.decode")


def test_the_checks_can_fail():
    """Imports written the ways the package writes them are caught, lazy and relative ones too."""
    lazy = "def f():\n    from attnsieve.methods.prefill import get_planner\n"
    assert upward("attnsieve.kernels.prefill", lazy) == ["attnsieve.methods.prefill"]
    assert upward("attnsieve.kernels.prefill", "from .. import api\n") == ["attnsieve.api"]
    assert upward("attnsieve.layout", "import attnsieve.cache\n") == ["attnsieve.cache"]
    assert upward("attnsieve.api", "from attnsieve.integrations import patch\n") == [
        "attnsieve.integrations"
    ]
    hidden = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import attnsieve.api\n"
    assert upward("attnsieve.kernels.prefill", hidden) == []
    assert imports("attnsieve.eval.tasks", "from attnsieve.demo import main\n") & CLI_MODULES


@pytest.mark.parametrize("module", list(_params()))
def test_dependencies_point_down(module):
    if module == "attnsieve":  # the package root re-exports the public names
        return
    bad = upward(module)
    assert bad == [], f"{module} imports a higher layer: {bad}"


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("attnsieve.kernels")])
def test_kernels_import_no_method_api_or_integration(module):
    banned = ("attnsieve.api", "attnsieve.methods", "attnsieve.integrations")
    bad = sorted(n for n in imports(module) if n.startswith(banned))
    assert bad == [], f"{module} imports {bad}"


def test_only_the_cli_entry_imports_cli_modules():
    offenders = {
        module: sorted(imports(module) & CLI_MODULES)
        for module in MODULES
        if module not in CLI_ENTRY and imports(module) & CLI_MODULES
    }
    assert offenders == {}


def test_cli_imports_its_commands_by_name_only():
    """cli.py imports no attnsieve module statically, and every command's module exists."""
    assert imports("attnsieve.cli") == set()
    assert imports("attnsieve.__main__") == {"attnsieve.cli"}
    for module, _ in cli.COMMANDS.values():
        assert module in MODULES, f"{module} (in cli.COMMANDS) is not a module of the package"
