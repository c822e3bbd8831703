"""docs/configuration.md lists every setting: a newcomer (or an agent) configures LoopKit from that table alone."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from loopkit_core.settings import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_every_setting_has_a_row_with_its_environment_variable() -> None:
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", DOC.read_text(), re.MULTILINE)}
    names = [f.name for f in fields(Settings)]
    assert sorted(set(names) - set(rows)) == []
    for name in names:
        assert f"`LOOPKIT_{name.upper()}`" in rows[name], name
