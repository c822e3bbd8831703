"""The layer rules of docs/architecture.md are import-linter contracts (pyproject.toml), checked here and so in CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter.configuration import configure
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract

REPO = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
configure()  # import-linter's own adapters (timer, file system), as `lint-imports` sets them up
TYPES = {"forbidden": ForbiddenContract, "layers": LayersContract, "acyclic_siblings": AcyclicSiblingsContract}


def test_lint_imports_keeps_every_contract():
    """`lint-imports` (what a contributor runs) passes on the tree as it is."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert command is not None, "import-linter is in the test extra: pip install -e '.[test]'"
    done = subprocess.run([command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken." in done.stdout


@pytest.fixture
def graph() -> grimp.ImportGraph:
    """The real import graph of LoopKit's three packages (a fresh one: the tests add to it)."""
    return grimp.build_graph(*CONFIG["root_packages"])


def _check(graph: grimp.ImportGraph, contract_id: str) -> bool:
    options: dict[str, Any] = next(c for c in CONFIG["contracts"] if c["id"] == contract_id)
    contract_options = {k: v for k, v in options.items() if k not in ("id", "name", "type")}
    contract_options = {k: (str(v) if isinstance(v, bool) else v) for k, v in contract_options.items()}
    contract = TYPES[options["type"]](options["name"], {"root_packages": CONFIG["root_packages"]}, contract_options)
    return contract.check(graph, verbose=False).kept


@pytest.mark.parametrize(
    ("importer", "imported", "contract_id"),
    [
        # a receiver building store rows again (what issue 14 found)
        ("loopkit_receivers.otlp_http", "loopkit_core.store.engines", "receivers-translate"),
        ("loopkit_receivers.intake", "loopkit_core.store.writer", "receivers-translate"),
        # a receiver authenticating against the control database itself
        ("loopkit_receivers.otlp_grpc", "loopkit_core.projects", "receivers-translate"),
        # the dashboard running SQL on the store
        ("loopkit_core.api.dashboard", "loopkit_core.store.schema", "front-ends-call-the-loop"),
        ("loopkit_core.cli", "loopkit_core.store.engines", "front-ends-call-the-loop"),
        # the CLI reusing a route module instead of a core service (what issue 14 found: api.projects.signup_shape)
        ("loopkit_core.cli.projects", "loopkit_core.api.projects", "clients-speak-http"),
        # a built-in plugin reaching past the Window
        ("loopkit_plugins.latency_outliers", "loopkit_core.store.records", "plugins-use-the-public-api"),
        # the store calling up into the loop service or the HTTP layer
        ("loopkit_core.store.packets", "loopkit_core.loop.service", "layers"),
        ("loopkit_core.loop.service", "loopkit_core.api.errors", "layers"),
        # the model depending on the store: a cycle store -> model -> store
        ("loopkit_core.model", "loopkit_core.store.records", "no-cycles"),
    ],
)
def test_a_wrong_way_import_breaks_a_contract(graph, importer, imported, contract_id):
    """Each contract can fail: one added wrong-way import (a throwaway edge in a copy of the graph) breaks it."""
    assert _check(graph, contract_id), f"{contract_id} must hold on the real tree"
    graph.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    assert not _check(graph, contract_id)
