"""Mask the variable parts of an error message so that one fault gives one template.

`mask(message)` replaces values with typed placeholders and keeps every other character, so the
words that name a fault (`refused`, `timed out`, `not found`, `not authorized`) survive:

==============  ==================================================================================
placeholder     what it replaces
==============  ==================================================================================
``<URL>``       ``scheme://...`` up to whitespace or a quote
``<EMAIL>``     ``local@domain.tld``
``<QUOTED>``    a quoted value without spaces, ``'alice'`` or ``"user_id"`` (a quoted *phrase* is
                text: it keeps its words and only its values are masked)
``<VAL>``       the value of ``key=value`` / ``key: "..."`` pairs, except plain words under keys
                that name an outcome (``error=timeout``, ``status=denied`` are kept)
``<TS>``        ISO 8601 / RFC 3339 date-times, dates, syslog and Apache time stamps, clock times
``<UUID>``      8-4-4-4-12 hex UUIDs
``<IP>``        IPv4 (optionally ``:port``), IPv6 (full or ``::``-compressed, optionally
                ``[...]:port``), MAC addresses
``<HOST>``      ``name.example.com`` (known top-level suffixes) and ``dotted.host:port``
``<PATH>``      Unix paths (``/a/b``, ``./a``, ``~/a``), Windows paths (``C:\\a``), UNC paths
``<DUR>``       numbers with a time unit: ``30s``, ``250ms``, ``1.5 h``, ``10 seconds``
``<SIZE>``      numbers with a size unit: ``12KB``, ``3.5 GiB``, ``512 bytes``
``<HEX>``       ``0x1f``, and bare hex strings of six or more characters with a digit
``<NUM>``       integers and decimals, signed, with exponent; digits after a word stem
                (``bglio11`` -> ``bglio<NUM>``)
``<ID>``        anything else with a digit in it; a leading word stem is kept because it says
                what kind of ID it is (``user-12345`` -> ``user-<ID>``, ``blk_-6952`` ->
                ``blk_<ID>``, ``req_8f3a9b`` -> ``req_<ID>``, ``rdd_2_1`` -> ``rdd_<ID>``)
``<BOOL>``      ``true`` / ``false`` (any case)
==============  ==================================================================================

Messages longer than `MAX_CHARS` are cut first (the head of a message names the fault; the tail of
a long one is usually a payload or a stack). Masking is pure `re`, about 10-25 microseconds for a
typical 80-200 character message, and memoised for exact repeats.
"""

from __future__ import annotations

import re

__all__ = ["MAX_CHARS", "PLACEHOLDERS", "mask", "is_placeholder"]

MAX_CHARS = 1000

PLACEHOLDERS = frozenset(
    {
        "<*>",
        "<URL>",
        "<EMAIL>",
        "<QUOTED>",
        "<VAL>",
        "<TS>",
        "<UUID>",
        "<IP>",
        "<HOST>",
        "<PATH>",
        "<DUR>",
        "<SIZE>",
        "<HEX>",
        "<NUM>",
        "<ID>",
        "<BOOL>",
    }
)

# Keys whose plain-word values name the outcome rather than an instance: `error=timeout` and
# `error=refused` are two faults, so these values must survive masking.
_OUTCOME_KEYS = frozenset(
    "error err errno reason status state code cause result kind type outcome fault failure exception "
    "op operation action method verb level severity phase stage".split()
)

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]{1,15}://[^\s\"'<>`]+")
_EMAIL = re.compile(r"\b[\w.+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
# A quoted value has no spaces; a quoted phrase is prose (`"connection refused"`) and stays text.
_QUOTED = re.compile(r"(?<![\w'\"])(?:'[^'\s]{1,200}'|\"[^\"\s]{1,200}\"|`[^`\s]{1,200}`)(?![\w'\"])")
_KV = re.compile(
    r"(?<![\w.\-])([A-Za-z_][\w.\-]{0,40})( ?[=] ?| ?: (?=[\"']))"
    r"(\"[^\"]*\"|'[^']*'|(?![\w.\-]+ ?=)[^\s,;&)\]}\"']+)"
)
_WORD = re.compile(r"[A-Za-z]+")

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t|tember)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)(?:day|sday|nesday|rsday|urday)?"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d{1,9})?"
_ZONE = r"(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"

# Every value class that starts at a word boundary and (nearly always) contains a digit. Order
# matters where two classes match at the same place: the longer, more specific one comes first.
_VALUES = re.compile(
    "|".join(
        [
            # date-times and dates
            rf"(?P<TS>(?<![\w.])(?:\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]{_CLOCK}{_ZONE})?"
            rf"|\d{{4}}/\d{{2}}/\d{{2}}(?:[ T]{_CLOCK})?"
            rf"|\d{{1,2}}/{_MONTH}/\d{{4}}(?::\d{{2}}:\d{{2}}:\d{{2}})?(?: [+-]\d{{4}})?"
            rf"|(?:{_DAY},? )?{_MONTH} +\d{{1,2}}(?:,? \d{{4}})?(?: {_CLOCK}{_ZONE})?(?: \d{{4}})?(?![\w:])"
            rf"|\d{{1,2}} {_MONTH} \d{{4}}(?: {_CLOCK}{_ZONE})?"
            rf"|\d{{1,2}}/\d{{1,2}}/\d{{2,4}}(?: {_CLOCK})?"
            rf"|{_CLOCK}(?![\w:]))(?![\w.]))",
            r"(?P<UUID>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)",
            r"(?P<MAC>(?<![\w:])(?:[0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}(?![\w:]))",
            r"(?P<IP4>(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.]))",
            r"(?P<IP6>(?<![\w:])\[?(?:(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}"
            r"|(?:[0-9a-fA-F]{1,4}:){1,6}:(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,5})?"
            r"|::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,6})?)\]?(?::\d{1,5})?(?![\w:]))",
            r"(?P<HOSTPORT>(?<![\w.\-])[A-Za-z][\w\-]*(?:\.[\w\-]+)+:\d{1,5}(?![\w.]))",
            r"(?P<DUR>(?<![\w.])[-+]?\d+(?:\.\d+)?(?:(?:ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d)\b"
            r"| ?(?:nanoseconds?|microseconds?|milliseconds?|seconds?|minutes?|hours?|days?)\b))",
            r"(?P<SIZE>(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[kKMGTP]i?B|B)\b|(?<![\w.])\d+(?:\.\d+)? ?bytes?\b)",
            r"(?P<HEX>(?<![\w.])0[xX][0-9a-fA-F]+\b)",
            r"(?P<NUM>(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w|\.\w))",
            # a maximal token with a digit: IDs, versions, stems with counters
            r"(?P<TOK>(?<![\w.\-+#~])[\w.\-+#~]*\d[\w.\-+#~]*(?<![.\-]))",
        ]
    )
)
_ALL_HEX = re.compile(r"[0-9a-fA-F]{6,}")
_STEM_DIGITS = re.compile(r"([A-Za-z]+)(\d+)")
_STEM = re.compile(r"(?:[A-Za-z]+[_.\-:~#])+")

_PATH = re.compile(
    r"(?<![\w.:/\\<])(?:(?:~|\.{1,2})?/(?!/|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?:[\w.@%+~\-]|<[A-Z]+>)+"
    r"(?:/(?:[\w.@%+~\-]|<[A-Z]+>)*)*"
    r"|[A-Za-z]:\\[^\s\"'<>|,;]*|\\\\[^\s\"'<>|,;]+)"
)
_TLD = (
    r"com|net|org|edu|gov|mil|int|io|dev|app|ai|co|cloud|local|internal|lan|corp|home|svc|cluster|"
    r"us|uk|de|fr|jp|cn|hk|ru|in|br|au|ca|nl|se|ch|it|es|eu|info|biz|me|tv|xyz"
)
_HOST = re.compile(rf"(?<![\w.\-/@])[A-Za-z0-9][\w\-]*(?:\.[\w\-]+)*\.(?:{_TLD})(?![\w\-]|\.\w)")
_BOOL = re.compile(r"\b(?:[Tt]rue|TRUE|[Ff]alse|FALSE)\b")


def _value(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "TOK":
        return _token(m.group())
    if kind in ("IP4", "IP6", "MAC"):
        return "<IP>"
    if kind == "HOSTPORT":
        return "<HOST>"
    return f"<{kind}>"


def _token(tok: str) -> str:
    """Mask a token that contains a digit, keeping a word stem that says what kind of ID it is."""
    if _ALL_HEX.fullmatch(tok) and not tok.isdigit():
        return "<HEX>"
    m = _STEM_DIGITS.fullmatch(tok)
    if m:
        return m.group(1) + "<NUM>"
    m = _STEM.match(tok)
    if m and m.end() < len(tok):
        return m.group() + "<ID>"
    return "<ID>"


def _kv(m: re.Match[str]) -> str:
    key, sep, value = m.group(1), m.group(2), m.group(3)
    if value.startswith("<") and value in PLACEHOLDERS:
        return m.group()
    if key.lower() in _OUTCOME_KEYS and _WORD.fullmatch(value.strip("\"'")):
        return m.group()
    return f"{key}{sep.strip() if sep.strip() == '=' else sep}<VAL>"


_memo: dict[str, str] = {}
_MEMO_MAX = 65536


def mask(message: str) -> str:
    """Return `message` with its variable parts replaced by typed placeholders (see module docs)."""
    hit = _memo.get(message)
    if hit is not None:
        return hit
    s = message if len(message) <= MAX_CHARS else message[:MAX_CHARS]
    # The order is load-bearing: values that contain other values (URLs hold hosts, paths and
    # numbers; e-mails hold hosts) go first, then key=value, then the digit-bearing classes.
    if "://" in s:
        s = _URL.sub("<URL>", s)
    if "@" in s:
        s = _EMAIL.sub("<EMAIL>", s)
    if "'" in s or '"' in s or "`" in s:
        s = _QUOTED.sub("<QUOTED>", s)
    if "=" in s or ": " in s:
        s = _KV.sub(_kv, s)
    if "/" in s or "\\" in s:
        s = _PATH.sub("<PATH>", s)
    s = _VALUES.sub(_value, s)
    if "." in s:
        s = _HOST.sub("<HOST>", s)
    if "rue" in s or "alse" in s or "RUE" in s or "ALSE" in s:
        s = _BOOL.sub("<BOOL>", s)
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
    _memo[message] = s
    return s


def is_placeholder(token: str) -> bool:
    """True when `token` is exactly one placeholder, e.g. ``<NUM>`` or ``<*>``."""
    return token in PLACEHOLDERS
