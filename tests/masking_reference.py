"""The masking and the ingest signature as they were before they were tuned for speed: the oracle.

`tests/test_masking_equivalence.py` checks that `loopkit_plugins.masking.mask` and
`loopkit_plugins.signature_clusterer.record_signature` give byte-identical results to these plain
versions (one `re` pass per class, no slices, no memo of the signature) on every corpus message, every
test string and random messages. A change to what masking does changes both; a change to how fast it
does it changes the plugin alone.
"""

from __future__ import annotations

import hashlib
import re

from loopkit_core.model import Record, Signature
from loopkit_plugins.signature_clusterer import operation_of, status_of

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
_IDENT_SEP = re.compile(r"[a-z][A-Z]|[A-Za-z0-9][_.\-:/][A-Za-z0-9]")


def has_fault_word(text: str) -> bool:
    """True when `text` names a fault: a fault word, or a strong one inside an identifier (``rate_limit_exceeded``)."""
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
_QUOTED = re.compile(r"(?<![\w'\"`])(?:'([^'\n]{1,200})'|\"([^\"\n]{1,200})\"|`([^`\n]{1,200})`)(?![\w'\"`])", re.ASCII)
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

_PATH = re.compile(
    r"(?<![\w.:/\\<])(?:(?:~|\.{1,2})?/(?!/|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?:[\w.@%+~\-]|<[A-Z]+>)+"
    r"(?:/(?:[\w.@%+~\-]|<[A-Z]+>)*)*"
    r"|[A-Za-z]:\\[^\s\"'<>|,;]*|\\\\[^\s\"'<>|,;]+)",
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


def _value(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "TOK":
        return _token(m.group())
    if kind == "NUM" and m.end() - m.start() == 3:
        number = m.group()
        if _is_status(number) and _STATUS_BEFORE.search(m.string, max(0, m.start() - 16), m.start()):
            return number
    return _PLACEHOLDER_OF[kind]


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
    key, value = m.group(1), m.group(3)
    # Quoted values are judged by the quote rule, later, once their inside is masked.
    if value[0] in "\"'" or (value.startswith("<") and value in PLACEHOLDERS):
        return m.group()
    # An outcome (`error=timeout`, `ErrorCode = NoNode`, `result=FAILED`) is the fault, not a value.
    if _is_status(value) and any(w.lower() in _STATUS_KEYS for w in _SUBWORD.findall(key)):
        return m.group()
    if _IDENT.fullmatch(value) and (
        any(w.lower() in _OUTCOME_KEYS for w in _SUBWORD.findall(key)) or has_fault_word(value)
    ):
        return m.group()
    return f"{key}=<VAL>"


# A list of values of one class (`<IP>, <IP>, <IP>`, `blk_<ID> blk_<ID>`) is one value: the same
# statement logs one address or several. A clusterer's `<*>` is not a value class: `Set(<*>, <*>)`
# stands for two words that varied, and stays as it is. Both patterns start with a literal, so the scan is a fast
# search for `<` or `>` rather than a try at every position.
_LIST = re.compile(r"<([A-Z]+)>((?:(?:, ?|; ?| )(?:[A-Za-z]+[_.\-:~#])*<\1>)+)(?![\w<])")
_LIST_ITEM = re.compile(r"(?:, ?|; ?| )((?:[A-Za-z]+[_.\-:~#])*)<")
_STEM_BEFORE = re.compile(r"(?<![\w<>])(?:[A-Za-z]+[_.\-:~#])*$")
# A parenthesised detail of a value that holds only values (`<SIZE> (<SIZE>)` from `123 bytes (0.1 KB)`,
# `<HOST> (<IP>)`): the same statement prints it or not.
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
    if ("> " in template or ">," in template or ">;" in template) and _LIST.search(template):
        template = _LIST.sub(_list, template)
    if (">(" in template or "> (" in template) and _DETAIL.search(template):
        template = _DETAIL.sub(">", template)
    return template


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
    if "=" in s:
        s = _KV.sub(_kv, s)
    if "/" in s or "\\" in s:
        s = _PATH.sub("<PATH>", s)
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


def record_signature(record: Record) -> Signature:
    """The masked-template signature of an error or tool failure, prefixed by its outcome attributes."""
    operation = operation_of(record)
    template = mask(record.message or record.exception_type or "")
    # Without outcome attributes the key is what it always was, so stored signatures keep their issues.
    status = status_of(record) if record.attributes else ""
    if status:
        template = f"[{status}] {template}"
    key = _hash(record.type, record.service, operation, record.exception_type or "", template)
    return Signature(key=key, template=template, operation=operation)


def _hash(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()
