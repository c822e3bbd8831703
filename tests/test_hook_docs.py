"""Meta-tests: every hook is documented with its exact signature, has a docstring, and is exercised by a test."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import FunctionType, ModuleType

import pluggy
import pytest

import loopkit_core
from loopkit_core import hookspecs
from loopkit_core.model import Issue, Signature
from loopkit_core.window import Window

REPO = Path(__file__).resolve().parent.parent
HOOK_DOCS = REPO / "docs" / "plugin_hooks.md"
WRITING = REPO / "docs" / "writing_plugins.md"
EXAMPLE = REPO / "tests" / "data" / "thirdparty_plugin"


def hooks() -> dict[str, FunctionType]:
    """Every hookspec in loopkit_core/hookspecs.py, by name."""
    found = {name: fn for name, fn in vars(hookspecs).items() if hasattr(fn, "loopkit_spec")}
    assert found, "no hookspecs found"
    return found


def signature_line(name: str, fn: FunctionType) -> str:
    """`def name(arg: Type, ...) -> Return`, from inspect.signature (annotations are strings: no quotes)."""

    def text(annotation: object) -> str:
        return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    signature = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {text(p.annotation)}" for p in signature.parameters.values())
    return f"def {name}({params}) -> {text(signature.return_annotation)}"


def sections(markdown: str, level: int) -> dict[str, str]:
    """Heading text (backticks stripped) -> the section's text, for headings of exactly `level` (fences skipped)."""
    out: dict[str, str] = {}
    current = None
    fenced = False
    for line in markdown.splitlines():
        fenced ^= line.startswith("```")
        heading = None if fenced else re.match(r"(#+) (.*)", line)
        if heading and len(heading.group(1)) <= level:
            current = heading.group(2).strip().strip("`") if len(heading.group(1)) == level else None
            if current is not None:
                out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out


def hook_sections() -> dict[str, str]:
    """The `### name` sections under `## Hooks` in docs/plugin_hooks.md."""
    text = HOOK_DOCS.read_text()
    hooks_part = sections(text, 2)["Hooks"]
    return sections(hooks_part, 3)


def code_blocks(text: str, language: str) -> list[tuple[str, str]]:
    """(info string, code) of every fenced block whose language is `language`."""
    pattern = re.compile(r"^```" + language + r"([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    return [(m.group(1).strip(), m.group(2)) for m in pattern.finditer(text)]


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_has_a_section_with_its_exact_signature(name):
    section = hook_sections().get(name)
    assert section is not None, f"docs/plugin_hooks.md has no `### {name}` section under `## Hooks`"
    expected = signature_line(name, hooks()[name])
    assert "```python\n" + expected + "\n```" in section, (
        f"the {name} section must show its exact signature in a python block:\n{expected}"
    )
    summary = inspect.getdoc(hooks()[name]).splitlines()[0]
    assert summary in section, f"the {name} section must quote the hook's one-line summary: {summary}"
    for heading in ("**Arguments**", "**Returns**", "**Contract**", "**Example**"):
        assert heading in section, f"the {name} section has no {heading}"
    assert "@hookimpl" in section and f"def {name}(" in section.split("**Example**")[1], f"{name}: no example"


def test_no_section_documents_a_hook_that_does_not_exist():
    assert sorted(hook_sections()) == sorted(hooks())


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_has_a_one_line_summary_docstring(name):
    doc = inspect.getdoc(hooks()[name])
    assert doc, f"hookspec {name} has no docstring"
    lines = doc.splitlines()
    assert lines[0].endswith(".") and len(lines[0]) <= 100, f"{name}: the first line must be one sentence"
    assert len(lines) == 1 or lines[1] == "", f"{name}: the one-line summary must stand alone"


def python_files_under_tests() -> list[Path]:
    """Python files under tests/ other than this one (fixtures under tests/data included)."""
    return [p for p in sorted((REPO / "tests").rglob("*.py")) if p.name != Path(__file__).name]


@pytest.mark.parametrize("name", sorted(hooks()))
def test_every_hook_is_exercised_by_a_test(name):
    implemented = re.compile(r"@hookimpl(?:\([^)]*\))?\s*\n\s*def " + name + r"\(")
    called = re.compile(r"\.hook\." + name + r"\(")
    users = [
        p.name for p in python_files_under_tests() if implemented.search(p.read_text()) or called.search(p.read_text())
    ]
    assert users, f"no test implements (@hookimpl def {name}) or calls (.hook.{name}) the hook {name}"


def test_every_public_window_method_is_documented():
    text = sections(HOOK_DOCS.read_text(), 2)["Window"]
    public = [n for n, v in vars(Window).items() if not n.startswith("_") and inspect.isfunction(v)]
    assert public
    for name in public:
        signature = str(inspect.signature(getattr(Window, name))).replace("'", "")
        params = [p for p in inspect.signature(getattr(Window, name)).parameters if p != "self"]
        assert f"`Window.{name}(" in text, f"docs/plugin_hooks.md does not describe Window.{name}{signature}"
        line = next(line for line in text.splitlines() if f"`Window.{name}(" in line)
        for param in params:
            assert param in line, f"Window.{name}: parameter {param} not shown"
    for attribute in ("project_id", "start_ns", "end_ns", "engine"):
        assert f"`{attribute}`" in text


@pytest.mark.parametrize(("cls", "heading"), [(Issue, "Issue"), (Signature, "Signature")])
def test_every_field_is_documented(cls, heading):
    text = sections(HOOK_DOCS.read_text(), 2)[heading]
    for field in dataclasses.fields(cls):
        assert f"`{field.name}`" in text, f"{heading}.{field.name} is not documented"


def test_the_selector_forms_are_documented():
    text = sections(HOOK_DOCS.read_text(), 3)["Selectors"]
    for form in ('{"signatures":', '{"record_ids":', '{"type":', '{"name":'):
        assert f"`{form}" in text, form
    assert "GET /v1/telemetry?issue=" in text


def test_blocking_and_failures_are_documented():
    text = HOOK_DOCS.read_text()
    parts = sections(text, 2)
    assert "LOOPKIT_BLOCKED_PLUGINS" in parts["Blocking plugins"]
    failures = parts["How failures are reported"]
    for needle in ("load_errors", "diagnoser_errors", "GET /v1/plugins", "record_signature"):
        assert needle in failures, needle


def load_module(name: str, source: str) -> ModuleType:
    """A module object from source text (not put in sys.modules)."""
    module = ModuleType(name)
    exec(compile(source, name, "exec"), module.__dict__)
    return module


def test_the_examples_in_the_hook_docs_are_valid_plugins():
    examples = [code for _, code in code_blocks(HOOK_DOCS.read_text(), "python") if "@hookimpl" in code]
    assert len(examples) == len(hooks())
    for i, source in enumerate(examples):
        manager = pluggy.PluginManager("loopkit")
        manager.add_hookspecs(hookspecs)
        manager.register(load_module(f"doc_example_{i}", source), name=f"example{i}")
        manager.check_pending()  # raises for a misspelt hook or wrong argument names


def test_writing_plugins_shows_exactly_the_example_package():
    text = WRITING.read_text()
    blocks = {info: code for language in ("toml", "python") for info, code in code_blocks(text, language) if info}
    files = {f'title="{p.name}"': p.read_text() for p in sorted(EXAMPLE.iterdir()) if p.is_file()}
    assert sorted(files) == ['title="loopkit_slow_users.py"', 'title="pyproject.toml"', 'title="test_slow_users.py"']
    assert blocks == files


def test_writing_plugins_uses_the_real_entry_point_group():
    text = WRITING.read_text()
    assert '[project.entry-points.loopkit]\nslow_users = "loopkit_slow_users"' in text
    assert "pip install -e ." in text and "loopkit plugins" in text and "GET /v1/plugins" in text


def public_objects() -> list[tuple[str, object]]:
    """(qualified name, object) of every public function, class and method defined in loopkit_core."""
    found = []
    for info in pkgutil.walk_packages(loopkit_core.__path__, "loopkit_core."):
        module = importlib.import_module(info.name)
        found.append((info.name, module))
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                found.append((f"{info.name}.{name}", obj))
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    function = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                    if not attr.startswith("_") and inspect.isfunction(function):
                        found.append((f"{info.name}.{name}.{attr}", function))
    return found


def test_every_public_function_in_loopkit_core_has_a_docstring():
    missing = []
    for name, obj in public_objects():
        doc = (obj.__doc__ or "").strip()
        generated = inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc.startswith(obj.__name__ + "(")
        if not doc or generated:
            missing.append(name)
    assert missing == []
