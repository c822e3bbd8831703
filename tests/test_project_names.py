"""Project names never carry characters that break or reorder the text around them (signup, provision, CLI)."""

from __future__ import annotations

import httpx
import pytest

from loopkit_core.projects import list_projects, validate_name
from loopkit_core.server import Running

REFUSED = [
    ("a\x01b", "control characters (U+0001 at position 1)"),
    ("\x1bescape", "control characters (U+001B at position 0)"),
    ("del\x7f", "control characters (U+007F at position 3)"),
    ("next\x85line", "control characters (U+0085 at position 4)"),
    ("c1\x9f", "control characters (U+009F at position 2)"),
    ("line\u2028sep", "line or paragraph separators (U+2028 at position 4)"),
    ("para\u2029sep", "line or paragraph separators (U+2029 at position 4)"),
    ("\u202eevil", "bidirectional control characters (U+202E at position 0)"),
    ("ab\u202dc", "bidirectional control characters (U+202D at position 2)"),
    ("x\u202ay", "bidirectional control characters (U+202A at position 1)"),
    ("iso\u2066late", "bidirectional control characters (U+2066 at position 3)"),
    ("pop\u2069", "bidirectional control characters (U+2069 at position 3)"),
    ("mark\u200f", "bidirectional control characters (U+200F at position 4)"),
    ("arabic\u061cmark", "bidirectional control characters (U+061C at position 6)"),
]
ACCEPTED = ["café ünïcode", "😀🔥", "family 👨\u200d👩\u200d👧", "שלום app", "a-b_c.d"]


@pytest.mark.parametrize(("name", "reason"), REFUSED, ids=[repr(n) for n, _ in REFUSED])
def test_names_with_control_separator_or_bidi_characters_are_refused(name: str, reason: str):
    with pytest.raises(ValueError) as refused:
        validate_name(name)
    assert str(refused.value) == f"project name must not contain {reason}"


@pytest.mark.parametrize("name", ACCEPTED)
def test_ordinary_unicode_names_are_kept(name: str):
    assert validate_name(f"  {name} ") == name


@pytest.mark.parametrize(("name", "reason"), REFUSED[::3], ids=[repr(n) for n, _ in REFUSED[::3]])
def test_signup_and_provision_answer_400_with_the_reason(server: Running, client: httpx.Client, name, reason):
    for route, body in (("/v1/signup", {"project_name": name}), ("/v1/provision", {"project_name": name})):
        response = client.post(route, json=body)
        assert response.status_code == 400, (route, response.text)
        error = response.json()["error"]
        assert (error["code"], error["message"]) == ("bad_request", f"project name must not contain {reason}")
    assert list_projects(server.app.store.control) == []
