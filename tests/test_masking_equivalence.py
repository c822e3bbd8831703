"""The tuned masking and ingest signature give byte-identical results to the plain ones (`masking_reference`).

Signature keys are issue identities and templates are what clustering and titles read: speeding the
masking up must change no output. Checked on every message of every corpus of `bench/corpora.py` (two
seeds), every string literal of the masking, template and grouping-status tests, and random messages
built from the corpora's tokens and the separators the tuned passes reason about.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import masking_reference as reference
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopkit_core.model import Record
from loopkit_plugins import masking, signature_clusterer

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (7, 2026)
TEST_FILES = ("test_masking.py", "test_templates.py", "test_grouping_status.py")
# Characters around which the tuned passes skip work (quotes, path and key separators, the ends of
# IPv6 addresses and of tokens, list separators): random messages put them between real tokens.
SEPARATORS = [" ", " ", " ", ", ", "; ", ": ", "=", " = ", "(", ")", "[", "]", "'", '"', "`", "-", ".", ":"]
SEPARATORS += ["::", "/", "\\", "+", "#", "~", "@", "://", "\t", "\n", "", "<", ">", "> (", "_"]


def _corpora() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corpora", ROOT / "bench" / "corpora.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("corpora", module)
    spec.loader.exec_module(module)
    return module


corpora = _corpora()
RECORDS = [r for seed in SEEDS for records in corpora.build_all(seed, 1500).values() for r in records]
MESSAGES = list(dict.fromkeys(r.message for r in RECORDS))
TOKENS = sorted({token for message in MESSAGES for token in message.split()})


def _test_strings() -> list[str]:
    found: list[str] = []
    for name in TEST_FILES:
        tree = ast.parse((ROOT / "tests" / name).read_text())
        found += [
            node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
    return list(dict.fromkeys(found))


def _as_record(r: object, i: int) -> Record:
    """A corpus record as the ingest sees it (as `bench/grouping.py` builds it)."""
    attributes = r.attributes  # type: ignore[attr-defined]
    return Record(
        record_id=f"rec_{i:024x}",
        ts_ns=1_700_000_000_000_000_000 + i,
        end_ns=1_700_000_000_000_000_000 + i,
        type="tool_failure" if i % 7 == 0 else "error",
        name=r.operation,  # type: ignore[attr-defined]
        service=f"svc{i % 3}",
        status="error",
        message=r.message,  # type: ignore[attr-defined]
        exception_type=r.exception_type or attributes.get("error.type") or None,  # type: ignore[attr-defined]
        attributes=attributes,
    )


def _differences(messages: list[str]) -> list[tuple[str, str, str]]:
    masking._memo.clear()
    return [(m, want, got) for m in messages if (want := reference.mask(m)) != (got := masking.mask(m))]


def test_every_corpus_message_masks_as_before() -> None:
    assert len(MESSAGES) > 30_000
    assert _differences(MESSAGES) == []
    # The memoised path returns the same.
    assert [masking.mask(m) for m in MESSAGES[:2000]] == [reference.mask(m) for m in MESSAGES[:2000]]


def test_every_test_string_masks_as_before() -> None:
    strings = _test_strings()
    assert len(strings) > 300
    assert _differences(strings) == []
    assert [masking.collapse(s) for s in strings] == [reference.collapse(s) for s in strings]
    assert [masking.has_fault_word(s) for s in strings] == [reference.has_fault_word(s) for s in strings]


def test_every_corpus_record_has_the_signature_it_had() -> None:
    signature_clusterer._signatures.clear()
    masking._memo.clear()
    records = [_as_record(r, i) for i, r in enumerate(RECORDS)]
    assert sum(bool(r.attributes) for r in records) > 100  # outcome prefixes are covered
    want = [reference.record_signature(r) for r in records]
    got = [signature_clusterer.record_signature(r) for r in records]
    assert [(s.key, s.template, s.operation) for s in got] == [(s.key, s.template, s.operation) for s in want]
    assert got == want
    # Memoised signatures are shared, and equal to fresh ones.
    again = [signature_clusterer.record_signature(r) for r in records[:500]]
    assert all(a is b for a, b in zip(again, got[:500], strict=True))


@pytest.mark.parametrize("length", [20, 43, 44, 45, 300, 940])
def test_long_heads_mask_as_before(length: int) -> None:
    # The gated passes scan from where a match can start: the head before the first `://`, `=` or `/`
    # is long here, and the character before each value varies.
    head = ("while handling request 42 for tenant acme-7 the upstream said " * 20)[:length]
    tails = ["/var/log/app.log", "~/a", "../b", "a.b=1", "user=alice took=30ms", "https://x.example.com/a"]
    tails += ['"hi there"', "'alice'", "status=503", "C:\\a\\b", "x-12", "status_from_upstream_payment_gw_xy=pending"]
    assert _differences([head + sep + tail for tail in tails for sep in ("", " ", "(", ".", "-", "_")]) == []


messages = st.lists(st.tuples(st.sampled_from(TOKENS), st.sampled_from(SEPARATORS)), min_size=1, max_size=14).map(
    lambda parts: "".join(token + sep for token, sep in parts)
)


@settings(max_examples=400, deadline=None)
@given(messages)
def test_random_messages_from_corpus_tokens_mask_as_before(message: str) -> None:
    masking._memo.clear()
    assert masking.mask(message) == reference.mask(message)
