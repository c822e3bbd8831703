"""Mask the variable parts of an error message so that one fault gives one template.

`mask(message)` replaces values with typed placeholders and keeps every other character, so the
words that name a fault (`refused`, `timed out`, `not found`, `not authorized`) survive:

==============  ==================================================================================
placeholder     what it replaces
==============  ==================================================================================
``<URL>``       ``scheme://...`` up to whitespace or a quote
``<EMAIL>``     ``local@domain.tld``
``<QUOTED>``    a quoted value, ``'alice'``, ``"best pizza"``; kept when it names a fault
                (``"connection refused"``, ``'rate_limit_exceeded'``), when it is a phrase with a
                value inside (``"GET /a/1 HTTP/1.1"``: only the values go) and when it is a key
                (``{"level": ...}``)
``<VAL>``       the value of ``key=value`` (or ``key = value``), unless it is a plain word that names
                an outcome (``error=timeout``, ``status=denied``, ``ErrorCode = NoNode`` are kept);
                a quoted value follows the quote rule
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
                ``blk_<ID>``, ``req_8f3a9b`` -> ``req_<ID>``, ``rdd_2_1`` -> ``rdd_<ID>``); also
                random mixed-case IDs without digits (``MININT-sRZeBuk`` -> ``MININT-<ID>``)
``<BOOL>``      ``true`` / ``false`` (any case)
==============  ==================================================================================

An HTTP status (4xx, 5xx) right after ``status``, ``code`` or ``HTTP`` is kept (``status 404``): a 404
and a 503 are two faults. After the classes, a list of placeholders of one class is one placeholder
(``<IP>, <IP>`` -> ``<IP>``, one address or several from the same statement), and a parenthesised
detail of a value made only of values is dropped (``123 bytes (0.1 KB)`` -> ``<SIZE>``): `collapse`.

Messages longer than `MAX_CHARS` are cut first (the head of a message names the fault; the tail of
a long one is usually a payload or a stack). Masking is pure `re`: a few gated passes (URLs,
e-mails, key=value, paths, quotes, lists and details) and one combined scan for everything that starts a
word, in which a word of letters only costs one look. A gated pass skips what cannot hold a match (the
head before the first `://` or `=`; the path and quote patterns start with their first character, so
the engine jumps to it); the verdicts on keys and fault words are memoised. About 8-9 microseconds for a
typical 80-200 character message on one core, and memoised for exact repeats. `tests/masking_reference.py`
is the plain version this must equal, byte for byte.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "FAULT_WORDS",
    "STRONG_FAULT_WORDS",
    "MAX_CHARS",
    "PLACEHOLDERS",
    "collapse",
    "has_fault_word",
    "is_placeholder",
    "mask",
]

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


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Keys whose plain-word values name the outcome rather than an instance: `error=timeout` and
# `error=refused` are two faults, so these values must survive masking.
_OUTCOME_KEYS = _words(
    """
    error err errno reason status state code cause result kind type outcome fault failure exception
    op operation action method verb level severity phase stage
    """
)

# Words that name what went wrong (shared with `loopkit_plugins.templates`): a quoted string that
# contains one is a message, not a value, and a template column holding one is a fault axis.
FAULT_WORDS = _words(
    """
    abort aborted aborting abnormal bad blocked broken busy cancel canceled cancelled cannot
    closed conflict corrupt corrupted crash crashed deadline deadlock decline declined denied deny
    disabled disconnect disconnected dropped duplicate empty err error errors exceed exceeded
    exceeds exception exhausted exist exists expire expired fail failed failing fails failure
    fault fatal forbidden found full illegal incorrect insufficient interrupted invalid killed
    leak limited locked lost malformed missing mismatch no none not null nil oom overflow
    overloaded panic refuse refused reject rejected reset revoked stale terminated throttled
    timed timeout timeouts unable unauthenticated unauthorized authorized authenticated
    unavailable unexpected unknown unreachable unsupported wrong allowed permitted underflow
    unhealthy violation
    """
)
# The unambiguous ones: inside an identifier (`reset_password`, `lock_file`) only these
# make it a fault name (`rate_limit_exceeded`, `NullPointerException`, `ERR_NAME_NOT_RESOLVED`).
STRONG_FAULT_WORDS = FAULT_WORDS - _words(
    """
    busy closed disabled empty full no none not null nil reset found cancel exist exists lost stale
    authorized authenticated allowed permitted
    """
)
_fault_memo: dict[str, bool] = {}
_FAULT_MEMO_MAX = 16384
_IDENT_SEP = re.compile(r"[a-z][A-Z]|[A-Za-z0-9][_.\-:/][A-Za-z0-9]")


def has_fault_word(text: str) -> bool:
    """True when `text` names a fault: a fault word, or a strong one inside an identifier (``rate_limit_exceeded``)."""
    # Memoised: the same keys' values and quoted words come back in message after message.
    hit = _fault_memo.get(text)
    if hit is None:
        if len(_fault_memo) >= _FAULT_MEMO_MAX:
            _fault_memo.clear()
        hit = _fault_memo[text] = _has_fault_word(text)
    return hit


def _has_fault_word(text: str) -> bool:
    words = [w.lower() for w in _SUBWORD.findall(text)]
    lexicon = FAULT_WORDS
    if len(words) > 1 and _IDENT_SEP.search(text) and " " not in text:
        # Mostly one- and two-letter pieces: a random ID (`vfSzKIzLdCJTQQftbvJIqNoW`), not words.
        if 2 * sum(len(w) <= 2 for w in words) > len(words):
            return False
        lexicon = STRONG_FAULT_WORDS
        # `NotFound`, `ERR_NAME_NOT_RESOLVED`: a negation inside an identifier names an outcome too.
        if "not" in words[:-1] or "no" in words[:-1] or "non" in words[:-1]:
            return True
    return any(w in lexicon for w in words)


_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]{1,15}://[^\s\"'<>`]+", re.ASCII)
_EMAIL = re.compile(r"\b[\w.+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b", re.ASCII)
# A quoted value has no spaces; a quoted phrase is prose (`"connection refused"`) and stays text.
# A quoted string is a value (`'alice'`, `"best pizza"`) unless it names what failed (`"connection
# refused"`, `'rate_limit_exceeded'`) or, being a phrase, carries structure (`"GET /a HTTP/1.1"`).
# Each branch starts with its quote and then looks behind it (the two-character look-behinds say "the
# quote does not follow a word or another quote"): a pattern that starts with a literal lets the
# engine skip to the next quote instead of trying every position.
_QUOTED = re.compile(
    r"(?:'(?<![\w'\"`]')([^'\n]{1,200})'|\"(?<![\w'\"`]\")([^\"\n]{1,200})\"|`(?<![\w'\"`]`)([^`\n]{1,200})`)"
    r"(?![\w'\"`])",
    re.ASCII,
)
_SUBWORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
_KV = re.compile(
    r"(?<![\w.\-])([A-Za-z_][\w.\-]{0,40}+)( ?= ?)"
    r"(\"[^\"]*\"|'[^']*'|(?![\w.\-]+ ?=)[^\s,;&)\]}\"']+)",
    re.ASCII,
)
_IDENT = re.compile(r"[A-Za-z][A-Za-z_\-]*")
_PLACEHOLDER = re.compile(r"<(?:\*|[A-Z]+)>")

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t|tember)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)(?:day|sday|nesday|rsday|urday)?"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d{1,9})?"
_ZONE = r"(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"

_TLD = (
    r"com|net|org|edu|gov|mil|int|io|dev|app|ai|co|cloud|local|internal|lan|corp|home|svc|cluster|"
    r"us|uk|de|fr|jp|cn|hk|ru|in|br|au|ca|nl|se|ch|it|es|eu|info|biz|me|tv|xyz"
)
_CODE_EXT = r"java|kt|scala|py|go|rb|js|ts|c|h|cc|cpp|cs|rs|php|swift"

# Every class below starts at the start of a word (ASCII `\w`: about a fifth faster, and values
# are ASCII). One shared look-behind rejects the positions
# inside words at once, and a look-ahead sends only words with a digit to the digit classes;
# that keeps one scan of a typical message at a few microseconds. Where two classes match at the
# same place, the longer, more specific one comes first.
_DIGIT_CLASSES = [
    rf"(?=\d{{1,4}}[-/:]|\d{{1,2}} [A-Z])(?P<TS>(?:\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]{_CLOCK}{_ZONE})?"
    rf"|\d{{4}}/\d{{2}}/\d{{2}}(?:[ T]{_CLOCK})?"
    rf"|\d{{1,2}}/{_MONTH}/\d{{4}}(?::\d{{2}}:\d{{2}}:\d{{2}})?(?: [+-]\d{{4}})?"
    rf"|\d{{1,2}} {_MONTH} \d{{4}}(?: {_CLOCK}{_ZONE})?"
    rf"|\d{{1,2}}/\d{{1,2}}/\d{{2,4}}(?: {_CLOCK})?"
    rf"|{_CLOCK}(?![\w:]))(?!\w|\.\w))",
    r"(?=[0-9a-fA-F]{8}-)(?P<UUID>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)",
    r"(?=[0-9a-fA-F]{2}[:-][0-9a-fA-F]{2}[:-])(?P<MAC>(?<!:)(?:[0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}(?![\w:]))",
    r"(?=\d{1,3}\.\d)(?P<IP4>(?<!\.)\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.]))",
    r"(?=\[?[0-9a-fA-F]{0,4}+:)(?P<IP6>(?<!:)\[?(?:(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}"
    r"|(?:[0-9a-fA-F]{1,4}:){1,6}:(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,5})?"
    r"|::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,6})?)\]?(?::\d{1,5})?(?![\w:]))",
    rf"(?=[\w\-]*+\.[\w.\-]*+:\d)(?P<HOSTPORT>(?<![.\-])(?![\w.\-]*\.(?:{_CODE_EXT}):)[A-Za-z][\w\-]*(?:\.[\w\-]+)+:\d{{1,5}}(?![\w.]))",
    rf"(?=[\w\-]*+\.)(?P<HOST>(?<![.\-/@])[A-Za-z0-9][\w\-]*(?:\.[\w\-]+)*\.(?:{_TLD})(?![\w\-]|\.\w))",
    r"(?=[-+]?[\d.]++ ?[a-zµA-Z])(?P<DUR>(?<!\.)[-+]?\d+(?:\.\d+)?(?:(?:ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d)\b"
    r"| ?(?:ns|us|µs|ms|nanoseconds?|microseconds?|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?)\b))",
    r"(?=[-+]?[\d.]++ ?[a-zA-Z])(?P<SIZE>(?<!\.)[-+]?\d+(?:\.\d+)? ?(?:[kKMGTP]i?B|B|bytes?)\b)",
    r"(?=0[xX])(?P<HEX>(?<!\.)0[xX][0-9a-fA-F]+\b)",
    r"(?P<NUM>(?<!\.)[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w|\.\w))",
    # a maximal token with a digit: IDs, versions, stems with counters
    r"(?P<TOK>(?<![.\-+#~])[\w.\-+#~]*\d[\w.\-+#~]*(?<![.\-]))",
]
_WORD_CLASSES = [
    rf"(?P<TS_>(?:{_DAY},? )?{_MONTH} +\d{{1,2}}(?:,? \d{{4}})?(?: {_CLOCK}{_ZONE})?(?: \d{{4}})?(?![\w:.]))",
    rf"(?P<HOST_>(?<![.\-/@])[A-Za-z][\w\-]*(?:\.[\w\-]+)*\.(?:{_TLD})(?![\w\-]|\.\w))",
]
_BOOL = r"(?P<BOOL>(?:[Tt]rue|TRUE|[Ff]alse|FALSE)\b)"
# A random mixed-case ID without digits (`sRZeBuk`, `KpAuYlXBnipOTSw`): case flips every letter or
# two, which camelCase words (`getTodayTotalSteps`, `MacBookPro`) do not.
_RANDOM = (
    r"(?P<RAND>(?=[A-Za-z]{6})(?=[a-z]*+[A-Z])(?=[A-Za-z]*?(?:[a-z][A-Z]{1,2}[a-z][A-Z]|[A-Z][a-z][A-Z][a-z][A-Z]))"
    r"[A-Za-z]+(?![\w\-.]))"
)
# Chars that extend a value token (`a.b`, `x-1`, `[::1]`): a word followed by one may still be a value
# (a `.` or `:` only when something follows it: `failed:` and `declined.` end their word).
_EXTENDS = r"(?![\w\-+#~\[]|[.:][\w\[:.\-+#~])"
# The gate that makes the scan cheap: a word of letters only, with no case flip inside (`to`, `Error`,
# `VM`), that nothing extends, can start no class (every class needs a digit, a dot, a case flip, a
# month or day name or a boolean), so the scan leaves it after one pass over its letters instead of
# trying each class in turn. Quantifiers are possessive where a retry could never succeed.
_PLAIN_WORD = (
    r"(?!(?!(?:true|false|True|False|TRUE|FALSE|Mon|Tue|Wed|Thu|Fri|Sat|Sun|Jan|Feb|Mar|Apr|May|Jun|Jul|Aug"
    r"|Sep|Oct|Nov|Dec)[a-z]*" + _EXTENDS + r")[A-Z]*+[a-z]*+" + _EXTENDS + ")"
)
_VALUES = re.compile(
    r"(?<!\w)"
    + _PLAIN_WORD
    + r"(?:(?=[A-Za-z_.\-+#~:\[]*+\d)(?:"
    + "|".join(_DIGIT_CLASSES)
    + r")|(?=[A-Z][a-z]{2}[a-z]* |[A-Za-z][\w\-]*+\.)(?:"
    + "|".join(_WORD_CLASSES)
    + r")|(?=[TtFf])"
    + _BOOL
    + "|"
    + _RANDOM
    + ")",
    re.ASCII,
)
_TOKEN_SHAPE = re.compile(
    r"(?P<hex>[0-9a-fA-F]{6,})\Z|(?P<digits>[A-Za-z]+)\d+\Z|(?P<stem>(?:[A-Za-z]+[_.\-:~#])+)", re.ASCII
)

_UNIX_PATH = r"/(?!/|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?:[\w.@%+~\-]|<[A-Z]+>)+(?:/(?:[\w.@%+~\-]|<[A-Z]+>)*)*"
_PATH = re.compile(
    r"(?<![\w.:/\\<])(?:(?:~|\.{1,2})?" + _UNIX_PATH + r"|[A-Za-z]:\\[^\s\"'<>|,;]*|\\\\[^\s\"'<>|,;]+)",
    re.ASCII,
)
# `_PATH` for a message without a backslash (no Windows or UNC path), its branches starting with their
# first character (`~`, `.`, `/`) so that the engine skips to those instead of trying every position.
_PATH_NO_BACKSLASH = re.compile(
    r"~(?<![\w.:/\\<]~)"
    + _UNIX_PATH
    + r"|\.(?<![\w.:/\\<]\.)\.?"
    + _UNIX_PATH
    + r"|/(?<![\w.:/\\<]/)"
    + _UNIX_PATH[1:],
    re.ASCII,
)


_PLACEHOLDER_OF = {name: f"<{name.rstrip('_')}>" for name in _VALUES.groupindex}
_PLACEHOLDER_OF.update({"IP4": "<IP>", "IP6": "<IP>", "MAC": "<IP>", "HOSTPORT": "<HOST>", "RAND": "<ID>"})


# An HTTP status after the word that names it (`status 404`, `HTTP 503`, `code: 500`) is the fault, not
# a value: a 404 and a 503 are two problems.
_STATUS_BEFORE = re.compile(r"(?<![\w\-])(?:(?:status|http)[ _]?code|status|code|http) ?[:=]? ?$", re.IGNORECASE)
_STATUS_KEYS = frozenset({"status", "code"})


def _is_status(text: str) -> bool:
    # Client and server errors only: a 2xx or 3xx on an error line does not tell two faults apart.
    return len(text) == 3 and (text[0] == "4" or text[0] == "5") and text.isdigit()


# The classes whose placeholder does not depend on the value: one dict look-up in the callback.
_FIXED_PLACEHOLDER = {name: text for name, text in _PLACEHOLDER_OF.items() if name not in ("TOK", "NUM")}


def _value(m: re.Match[str]) -> str:
    kind = m.lastgroup
    placeholder = _FIXED_PLACEHOLDER.get(kind)  # type: ignore[arg-type]
    if placeholder is not None:
        return placeholder
    if kind == "TOK":
        return _token(m.group())
    start = m.start()
    if m.end() - start == 3:
        number = m.group()
        if _is_status(number) and _STATUS_BEFORE.search(m.string, max(0, start - 16), start):
            return number
    return "<NUM>"


def _token(tok: str) -> str:
    """Mask a token that contains a digit, keeping a word stem that says what kind of ID it is."""
    # One match tries the three shapes in order: bare hex, a word stem with digits, a stem with separators.
    m = _TOKEN_SHAPE.match(tok)
    if m is None:
        return "<ID>"
    if m.lastgroup == "hex":
        return "<ID>" if tok.isdigit() else "<HEX>"
    if m.lastgroup == "digits":
        return m.group("digits") + "<NUM>"
    return m.group() + "<ID>" if m.end() < len(tok) else "<ID>"


def _quoted(m: re.Match[str]) -> str:
    inner = m.group(m.lastindex or 0)
    if has_fault_word(inner) or (" " in inner and "<" in inner and _PLACEHOLDER.search(inner)):
        return m.group()
    # A key of a JSON object or a dict repr (`"level": ...`, `'code': ...`) is structure, not a value.
    if m.string[m.end() : m.end() + 2].lstrip()[:1] == ":" and _IDENT.fullmatch(inner):
        return m.group()
    return "<QUOTED>"


def _kv(m: re.Match[str]) -> str:
    key, value = m.group(1, 3)
    # Quoted values are judged by the quote rule, later, once their inside is masked.
    if value[0] in "\"'" or (value.startswith("<") and value in PLACEHOLDERS):
        return m.group()
    # An outcome (`error=timeout`, `ErrorCode = NoNode`, `result=FAILED`) is the fault, not a value.
    if _is_status(value) and _key_kind(key)[0]:
        return m.group()
    if _IDENT.fullmatch(value) and (_key_kind(key)[1] or has_fault_word(value)):
        return m.group()
    return f"{key}=<VAL>"


_key_kinds: dict[str, tuple[bool, bool]] = {}


def _key_kind(key: str) -> tuple[bool, bool]:
    """Whether a key names a status (`status`, `http_code`) and whether it names an outcome, memoised."""
    kind = _key_kinds.get(key)
    if kind is None:
        words = [w.lower() for w in _SUBWORD.findall(key)]
        kind = (any(w in _STATUS_KEYS for w in words), any(w in _OUTCOME_KEYS for w in words))
        if len(_key_kinds) >= _FAULT_MEMO_MAX:
            _key_kinds.clear()
        _key_kinds[key] = kind
    return kind


# A list of values of one class (`<IP>, <IP>, <IP>`, `blk_<ID> blk_<ID>`) is one value: the same
# statement logs one address or several. A clusterer's `<*>` is not a value class: `Set(<*>, <*>)`
# stands for two words that varied, and stays as it is. Both patterns start with a literal, so the scan is a fast
# search for `<` or `>` rather than a try at every position.
_LIST = re.compile(r"<([A-Z]+)>((?:(?:, ?|; ?| )(?:[A-Za-z]+[_.\-:~#])*<\1>)+)(?![\w<])")
_LIST_ITEM = re.compile(r"(?:, ?|; ?| )((?:[A-Za-z]+[_.\-:~#])*)<")
_STEM_BEFORE = re.compile(r"(?<![\w<>])(?:[A-Za-z]+[_.\-:~#])*$")
# A parenthesised detail of a value that holds only values (`<SIZE> (<SIZE>)` from `123 bytes (0.1 KB)`,
# `<HOST> (<IP>)`): the same statement prints it or not.
# What every `_LIST` match holds, from its first item's `>` to its second item's `<`: searching for it
# is cheaper than trying `_LIST` at each placeholder, and it is in few templates.
_LIST_PAIR = re.compile(r">(?:, ?|; ?| )(?:[A-Za-z]+[_.\-:~#])*<")
_DETAIL = re.compile(r"> ?\((?: ?<[A-Z]+>[ ,;:/%.+\-=~*]*)+\)")


def _list(m: re.Match[str]) -> str:
    # Every item must carry the first one's word stem (`blk_`), and the first must start a token.
    before = _STEM_BEFORE.search(m.string, max(0, m.start() - 40), m.start())
    if before is None:
        return m.group()
    stem = before.group()
    if any(item != stem for item in _LIST_ITEM.findall(m.group(2))):
        return m.group()
    return f"<{m.group(1)}>"


def collapse(template: str) -> str:
    """Collapse lists of same-class placeholders to one and drop a parenthesised detail made only of values."""
    # Searching first is cheaper than a substitution that finds nothing, the common case.
    if ("> " in template or ">," in template or ">;" in template) and _LIST_PAIR.search(template):
        template = _LIST.sub(_list, template)
    if (">(" in template or "> (" in template) and _DETAIL.search(template):
        template = _DETAIL.sub(">", template)
    return template


def _sub_from(pattern: re.Pattern[str], repl: Any, s: str, start: int) -> str:
    """`pattern.sub(repl, s)` where no match can begin before `start`: the head is not scanned.

    The scan begins one character early, where no match can begin either, so that the pattern's
    one-character look-behinds read the same character as in a scan of all of `s`.
    """
    if start < 16:  # too short a head to pay for the slices
        return pattern.sub(repl, s)
    return s[: start - 1] + pattern.sub(repl, s[start - 1 :])


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
    # Each gated pass scans from the first place a match can start (a scheme is at most 16
    # characters before `://`, a key at most 42 before `=`, a path at most 2 before its `/`).
    at = s.find("://")
    if at >= 0:
        s = _sub_from(_URL, "<URL>", s, at - 16)
    if "@" in s:
        s = _EMAIL.sub("<EMAIL>", s)
    at = s.find("=")
    if at >= 0:
        s = _sub_from(_KV, _kv, s, at - 42)
    if "\\" in s:
        s = _PATH.sub("<PATH>", s)
    elif "/" in s:
        s = _PATH_NO_BACKSLASH.sub("<PATH>", s)
    s = _VALUES.sub(_value, s)
    if "'" in s or '"' in s or "`" in s:
        s = _QUOTED.sub(_quoted, s)
    s = collapse(s)
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
    _memo[message] = s
    return s


def is_placeholder(token: str) -> bool:
    """True when `token` is exactly one placeholder, e.g. ``<NUM>`` or ``<*>``."""
    return token in PLACEHOLDERS
