"""docs/architecture.md describes the tree as it is: every module is in its module map, and long modules say why."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "architecture.md").read_text()
PACKAGES = ("loopkit_core", "receivers", "plugins")
MAX_LINES = 400  # a module over this many lines needs a note in the doc's "Long modules" section


def module_map() -> set[str]:
    """The paths the module map's code block names: `dir/` lines open a folder, `name.py` lines are modules in it."""
    section = DOC.split("## Module map", 1)[1]
    block = section.split("```", 2)[1]
    found: set[str] = set()
    folders: list[tuple[int, str]] = []
    for line in block.splitlines():
        match = re.match(r"( *)(\S+)", line)
        if not match:
            continue
        indent, token = len(match.group(1)), match.group(2)
        while folders and folders[-1][0] >= indent:
            folders.pop()
        if token.endswith("/"):
            folders.append((indent, token.rstrip("/")))
        elif token.endswith(".py") and folders:
            found.add("/".join([name for _, name in folders] + [token]))
    return found


def modules() -> set[str]:
    """Every Python module of the three packages, as a path from the repository root."""
    return {
        path.relative_to(REPO).as_posix()
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }


def test_every_module_is_in_the_module_map():
    missing = sorted(modules() - module_map())
    assert not missing, f"add these to the module map of docs/architecture.md: {missing}"


def test_the_module_map_names_no_module_that_is_gone():
    named = {p for p in module_map() if p.split("/")[0] in PACKAGES and not p.endswith("__init__.py")}
    gone = sorted(named - modules())
    assert not gone, f"the module map of docs/architecture.md names modules that do not exist: {gone}"


def test_long_modules_say_why():
    notes = DOC.split("## Long modules", 1)[1].split("\n## ", 1)[0] if "## Long modules" in DOC else ""
    long = sorted(p for p in modules() if len((REPO / p).read_text().splitlines()) > MAX_LINES)
    unexplained = [path for path in long if f"`{path}`" not in notes]
    assert not unexplained, f"over {MAX_LINES} lines with no note in docs/architecture.md's Long modules: {unexplained}"


def test_the_module_map_parser_sees_nesting():
    """The parser itself: a folder's modules are named with the folder, siblings are not nested."""
    assert "loopkit_core/api/errors.py" in module_map() and "receivers/errors.py" in module_map()


def test_every_subpackage_is_packaged():
    """A subpackage missing from pyproject's `packages` works in an editable install and is absent from a wheel."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: folder for name, folder in setuptools["package-dir"].items()}
    found = set()
    for name, folder in folders.items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts and "static" not in init.parts:
                found.add(".".join([name, *init.parent.relative_to(REPO / folder).parts]))
    assert found == set(setuptools["packages"])
