"""loopkit.testing: the `loopkit` pytest plugin (entry point group `pytest11`) with fixtures for plugin authors.

Installed with LoopKit, so every pytest run of the environment loads this module: it imports nothing of LoopKit
until a test asks for one of its fixtures (`-p no:loopkit` turns it off). The fixtures:

- `loopkit_lab`: a `Lab` (loopkit_core/lab.py) over an in-memory project: `add` records, take a `window`,
  run one `diagnose`r or `verify`er, build a whole `packet`, `render` it;
- `loopkit_lab_on_disk`: the same over a real store (SQLite files) in the test's temporary directory;
- `loopkit_app`: a `LabApp`, the whole HTTP app in-process (no socket) with a project's keys.

docs/writing_plugins.md#test-it shows them at work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from loopkit_core.lab import Lab, LabApp


@pytest.fixture
def loopkit_lab() -> Iterator[Lab]:
    """A Lab over an in-memory project with the installed plugins (built-ins and entry points)."""
    from loopkit_core.lab import Lab

    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture
def loopkit_lab_on_disk(tmp_path: Path) -> Iterator[Lab]:
    """A Lab over a real store (control.db, projects/lab.db) in the test's temporary directory."""
    from loopkit_core.lab import Lab

    lab = Lab(tmp_path / "loopkit")
    yield lab
    lab.close()


@pytest.fixture
def loopkit_app(tmp_path: Path) -> Iterator[LabApp]:
    """The LoopKit HTTP app in-process over a temporary data directory, signed up for one project."""
    from loopkit_core.lab import LabApp

    app = LabApp(tmp_path / "loopkit-app")
    yield app
    app.close()


def __getattr__(name: str) -> Any:
    """`from loopkit_core.testing import Lab` (and LabApp, PluginFailed) without importing them up front."""
    if name in ("Lab", "LabApp", "PluginFailed"):
        from loopkit_core import lab

        return getattr(lab, name)
    raise AttributeError(name)
