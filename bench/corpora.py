"""Labelled corpora of error messages for the grouping benchmark (`bench/grouping.py`).

Each corpus is a list of templates; a record is one template with its slots filled by seeded random
values, and its label is the template it came from, so "one fault" is one template. There are two
kinds:

- production-like: web API errors, LLM agent tool failures and a JVM data pipeline, with operation
  names and exception types, request/user IDs, UUIDs, e-mails, URLs, paths, durations, quoted
  values, stack traces, plain-word variables (tenants, regions, programs) and pairs of templates
  where one word decides the fault (`timed out` / `refused`, `not found` / `not authorized`);
- system-log-like, written in the style of the systems in public log-parsing benchmarks (HDFS,
  Hadoop/Spark, OpenSSH/Linux, Android, Windows CBS, BGL/HPC, ZooKeeper, Apache/Proxifier): the
  message text only, one operation per system.

Four more (issue 17) carry what real logs split large groups by: a slot that holds one value or a
list, a value with or without a parenthesised detail, event words (`Started` / `Stopped`) next to
parameter words (object types, enum states) in a slot, and outcomes in OpenTelemetry attributes
(`Template.attrs`: `http.response.status_code`, `rpc.grpc.status_code`, ...) or in the text
(`status 404`).

Every corpus has 15-45 templates, a few thousand records, a Zipf-like frequency spread and rare
templates seen once or twice. Some cases are hard on purpose and labelled as a human would (a
variable that takes only two plain-word values in the sample; values of varying length).
Everything is deterministic for a given seed.
"""

# ruff: noqa: E501  (the corpora are message data: one template per line reads best)

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CORPORA", "Record", "Template", "build", "build_all"]


@dataclass(frozen=True)
class Template:
    """One logging statement: ``${slot}`` / ``${slot:arg}`` marks are filled per record."""

    fmt: str
    op: str = ""
    exc: str = ""
    rare: int = 0  # a fixed count (1 or 2) for rare templates; 0 draws the count from the spread
    attrs: tuple[tuple[str, Any], ...] = ()  # span or log attributes every record of the template carries


@dataclass(frozen=True)
class Record:
    """One labelled error record, as the benchmark posts it."""

    operation: str
    exception_type: str
    message: str
    fault: int
    attributes: dict[str, Any] = field(default_factory=dict)


Rng = random.Random

USERS = [
    "root",
    "admin",
    "test",
    "guest",
    "oracle",
    "postgres",
    "ubuntu",
    "git",
    "deploy",
    "nagios",
    "ftp",
    "www",
    "mysql",
    "user",
    "support",
    "backup",
    "jenkins",
    "hadoop",
    "pi",
    "ansible",
    "centos",
    "demo",
    "teamspeak",
    "minecraft",
    "sales",
]
TENANTS = ["acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark", "wayne"]
REGIONS = ["frankfurt", "virginia", "oregon", "tokyo", "dublin", "sydney"]
WORDS = [
    "pizza",
    "weather",
    "flights",
    "python",
    "tutorial",
    "hotels",
    "laptop",
    "review",
    "news",
    "football",
    "recipe",
    "mortgage",
    "shoes",
    "guitar",
    "coffee",
    "train",
]
PKGS = [
    "com.android.systemui",
    "com.tencent.mm",
    "com.android.phone",
    "com.google.android.gms",
    "com.whatsapp",
    "com.android.settings",
    "com.spotify.music",
    "com.android.launcher3",
    "com.huawei.health",
    "com.android.chrome",
]
ACTIVITIES = [".MainActivity", ".ui.HomeActivity", ".LauncherActivity", ".settings.SubSettings", ".app.SplashActivity"]
SERVICES = [".PushService", ".sync.SyncService", ".LocationService", ".MediaService"]
STATES = [
    "NEW",
    "UNASSIGNED",
    "ASSIGNED",
    "RUNNING",
    "COMMIT_PENDING",
    "SUCCESS_CONTAINER_CLEANUP",
    "SUCCEEDED",
    "SCHEDULED",
    "INITED",
    "SETUP",
]
PROGS = [
    "chrome.exe",
    "chrome.exe *64",
    "firefox.exe",
    "Dropbox.exe",
    "svchost.exe",
    "OUTLOOK.EXE",
    "git-remote-https.exe",
    "Skype.exe *64",
    "putty.exe",
    "WeChat.exe",
]


def _hex(rng: Rng, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _alnum(rng: Rng, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def _ip(rng: Rng) -> str:
    return (
        f"{rng.choice([10, 172, 192, 218, 61, 203])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )


def _zipf(rng: Rng, items: list[str] | tuple[str, ...]) -> str:
    weights = [1 / (i + 1) for i in range(len(items))]
    return rng.choices(items, weights)[0]


def _int(rng: Rng, arg: str) -> str:
    lo, hi = (int(x) for x in arg.split(":")) if arg else (0, 99999)
    return str(rng.randint(lo, hi))


def _dur(rng: Rng, _: str) -> str:
    return rng.choice(
        [f"{rng.randint(1, 120)}s", f"{rng.randint(5, 999)}ms", f"{rng.randint(1, 9)}.{rng.randint(0, 9)}s"]
    )


def _ts(rng: Rng, _: str) -> str:
    return (
        f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
        f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z"
    )


def _path(rng: Rng, _: str) -> str:
    top = rng.choice(["/var/data/uploads", "/srv/app/storage", "/workspace/project", "/tmp/job"])
    return f"{top}/{_hex(rng, 8)}/{rng.choice(WORDS)}{rng.choice(['.csv', '.json', '.png', '.txt', ''])}"


def _blk(rng: Rng, _: str) -> str:
    return f"blk_{rng.choice(['-', ''])}{rng.randint(10**17, 10**19)}"


def _job(rng: Rng, _: str) -> str:
    return f"job_{rng.randint(10**12, 10**13)}_{rng.randint(1, 9999):04d}"


def _attempt(rng: Rng, _: str) -> str:
    return (
        f"attempt_{rng.randint(10**12, 10**13)}_{rng.randint(1, 9999):04d}_{rng.choice('mr')}_"
        f"{rng.randint(0, 99):06d}_{rng.randint(0, 3)}"
    )


def _container(rng: Rng, _: str) -> str:
    return f"container_{rng.randint(10**12, 10**13)}_{rng.randint(1, 99):04d}_01_{rng.randint(1, 99):06d}"


def _choice(rng: Rng, arg: str) -> str:
    return _zipf(rng, arg.split("|"))


def _list(items: tuple[str, ...] | list[str]) -> Callable[[Rng, str], str]:
    return lambda rng, _: _zipf(rng, items)


def _blklist(rng: Rng, _: str) -> str:
    return " ".join(_blk(rng, "") for _ in range(rng.randint(1, 6)))


def _query(rng: Rng, _: str) -> str:
    return " ".join(rng.sample(WORDS, rng.randint(1, 4)))


def _rhost(rng: Rng, _: str) -> str:
    ip = _ip(rng).replace(".", "-")
    return rng.choice([f"ppp-{ip}.dsl.example.net", f"host-{ip}.static.isp.com", f"{ip}.broadband.cn"])


def _life(rng: Rng, _: str) -> str:
    return rng.choice(
        [
            "<1 sec",
            f"00:{rng.randint(0, 59):02d}",
            f"{rng.randint(0, 9):02d}:{rng.randint(0, 59):02d}:0{rng.randint(0, 9)}",
        ]
    )


def _dest(rng: Rng, _: str) -> str:
    host = rng.choice(["www.google.com", "clients4.google.com", "api.dropbox.com", "outlook.office365.com", _ip(rng)])
    return f"{host}:{rng.choice([80, 443, 5222, 8080])}"


def _fans(rng: Rng, _: str) -> str:
    return " ".join(str(rng.randint(2800, 4200)) for _ in range(rng.randint(3, 6)))


def _stack(rng: Rng, arg: str) -> str:
    frames = "".join(
        f'\n  File "/srv/app/{mod}.py", line {rng.randint(10, 400)}, in {fn}'
        for mod, fn in [("server", "dispatch"), ("handlers/" + arg, "handle"), ("lib/util", "call")]
    )
    return "Traceback (most recent call last):" + frames


def _jstack(rng: Rng, arg: str) -> str:
    frames = [f"com.acme.{arg}.Worker.run", "com.acme.core.Pipeline.step", "java.base/java.lang.Thread.run"]
    return "".join(f"\n\tat {f}({f.split('.')[-2]}.java:{rng.randint(20, 900)})" for f in frames)


def _iplist(rng: Rng, arg: str) -> str:
    """One address in most lines, a list of two to four in others (the same statement)."""
    sep = arg or ", "
    return sep.join(_ip(rng) for _ in range(rng.choice([1, 1, 1, 2, 3, 4])))


def _hostlist(rng: Rng, _: str) -> str:
    return ",".join(
        f"{rng.choice(['db', 'cache', 'kafka'])}-{rng.randint(0, 9)}.prod.internal"
        for _ in range(rng.choice([1, 1, 2, 3]))
    )


def _uuidlist(rng: Rng, _: str) -> str:
    return ", ".join(SLOTS["uuid"](rng, "") for _ in range(rng.choice([1, 1, 2, 3])))


def _bytes(rng: Rng, _: str) -> str:
    """A byte count, with its size in KB or MB in parentheses when it is large (as Proxifier prints it)."""
    n = rng.choice([rng.randint(0, 1023), rng.randint(1024, 10**6), rng.randint(10**6, 10**9)])
    if n < 1024:
        return f"{n} bytes"
    return f"{n} bytes ({n / 1024:.2f} KB)" if n < 1024**2 else f"{n} bytes ({n / 1024**2:.1f} MB)"


def _mem(rng: Rng, _: str) -> str:
    """A size printed bare in some lines and with a second unit in others."""
    n = rng.randint(64, 65536)
    return rng.choice([f"{n}MB", f"{n}MB ({n / 1024:.1f}GB)", f"{n} MB"])


def _addrs(rng: Rng, _: str) -> str:
    """An endpoint printed as a host, a host with its address, or a list of addresses."""
    host = f"{rng.choice(['payments', 'ledger', 'search', 'auth'])}.svc.cluster.local"
    return rng.choice([host, f"{host} ({_ip(rng)})", f"[{_iplist(rng, '')}]"])


SLOTS: dict[str, Callable[[Rng, str], str]] = {
    "int": _int,
    "float": lambda rng, _: f"{rng.uniform(0, 1000):.{rng.randint(1, 3)}f}",
    "f1": lambda rng, _: f"{rng.randint(0, 200)}.{rng.randint(0, 3)}",
    "hex": lambda rng, arg: _hex(rng, int(arg or 8)),
    "alnum": lambda rng, arg: _alnum(rng, int(arg or 12)),
    "uuid": lambda rng, _: f"{_hex(rng, 8)}-{_hex(rng, 4)}-4{_hex(rng, 3)}-a{_hex(rng, 3)}-{_hex(rng, 12)}",
    "req": lambda rng, _: f"req_{_hex(rng, 16)}",
    "uid": lambda rng, _: f"user-{rng.randint(1, 99999)}",
    "email": lambda rng, _: (
        f"{rng.choice(USERS)}{rng.randint(1, 999)}@{rng.choice(['gmail.com', 'example.org', 'corp.io'])}"
    ),
    "url": lambda rng, _: (
        f"https://{rng.choice(['api', 'cdn', 'auth'])}.example.com/v{rng.randint(1, 3)}/{rng.choice(WORDS)}/{rng.randint(1, 10**6)}"
    ),
    "ip": lambda rng, _: _ip(rng),
    "port": lambda rng, _: str(rng.randint(1024, 65535)),
    "ip6": lambda rng, _: f"2001:db8:{_hex(rng, 4)}::{_hex(rng, 3)}",
    "dur": _dur,
    "ts": _ts,
    "size": lambda rng, _: f"{rng.randint(1, 999)}{rng.choice(['KB', 'MB', 'GB'])}",
    "path": _path,
    "blk": _blk,
    "blklist": _blklist,
    "job": _job,
    "attempt": _attempt,
    "container": _container,
    "rdd": lambda rng, _: f"rdd_{rng.randint(0, 60)}_{rng.randint(0, 40)}",
    "choice": _choice,
    "user": _list(USERS),
    "tenant": _list(TENANTS),
    "region": _list(REGIONS),
    "word": _list(WORDS),
    "query": _query,
    "pkg": _list(PKGS),
    "activity": _list(ACTIVITIES),
    "service": _list(SERVICES),
    "state": _list(STATES),
    "prog": _list(PROGS),
    "rhost": _rhost,
    "life": _life,
    "dest": _dest,
    "fans": _fans,
    "ver": lambda rng, _: f"6.1.{rng.choice([7600, 7601])}.{rng.randint(16000, 23600)}",
    "node": lambda rng, _: f"node-{rng.randint(1, 256)}",
    "loc": lambda rng, _: (
        f"R{rng.randint(0, 7)}{rng.randint(0, 7)}-M{rng.randint(0, 1)}-N{rng.randint(0, 15)}-C:J{rng.randint(2, 17):02d}-U{rng.randint(1, 11):02d}"
    ),
    "bool": lambda rng, _: rng.choice(["true", "false"]),
    "stack": _stack,
    "jstack": _jstack,
    "iplist": _iplist,
    "hostlist": _hostlist,
    "uuidlist": _uuidlist,
    "bytes": _bytes,
    "mem": _mem,
    "addrs": _addrs,
    "pod": lambda rng, _: f"{rng.choice(['api', 'worker', 'web'])}-{_hex(rng, 10)}-{_alnum(rng, 5).lower()}",
    "osds": lambda rng, _: ",".join(str(rng.randint(0, 120)) for _ in range(rng.choice([1, 1, 2, 3, 5]))),
}
_SLOT = re.compile(r"\$\{(\w+)(?::([^}]*))?\}")


def _fill(fmt: str, rng: Rng) -> str:
    return _SLOT.sub(lambda m: SLOTS[m.group(1)](rng, m.group(2) or ""), fmt)


def _counts(templates: list[Template], total: int, rng: Rng) -> list[int]:
    """A Zipf-like spread over the common templates (at least 3 each) plus the fixed rare counts."""
    common = [i for i, t in enumerate(templates) if not t.rare]
    ranks = list(range(1, len(common) + 1))
    rng.shuffle(ranks)
    weights = {i: 1 / r**0.9 for i, r in zip(common, ranks, strict=True)}
    budget = total - sum(t.rare for t in templates)
    scale = budget / sum(weights.values())
    return [t.rare if t.rare else max(3, round(weights[i] * scale)) for i, t in enumerate(templates)]


def build(name: str, seed: int = 7, total: int = 3000) -> list[Record]:
    """The records of one corpus, shuffled, deterministic for a given seed."""
    templates = CORPORA[name]
    rng = random.Random(f"{name}:{seed}")
    records = [
        Record(t.op or name, t.exc, _fill(t.fmt, rng), i, dict(t.attrs))
        for i, (t, n) in enumerate(zip(templates, _counts(templates, total, rng), strict=True))
        for _ in range(n)
    ]
    rng.shuffle(records)
    return records


def build_all(seed: int = 7, total: int = 3000) -> dict[str, list[Record]]:
    """Every corpus by name."""
    return {name: build(name, seed, total) for name in CORPORA}


T = Template
_CHECKOUT, _USERS, _LOGIN, _SEARCH = "POST /api/checkout", "GET /api/users/{id}", "POST /api/login", "GET /api/search"
_UPLOAD, _ORDERS, _REPORTS, _MAIL = "POST /api/uploads", "GET /api/orders", "GET /api/reports", "worker.send_email"

WEB_API = [
    T("Your card was declined. (request ${req}, charge ch_${alnum:24})", _CHECKOUT, "stripe.error.CardError"),
    T("Your card has expired. (request ${req}, charge ch_${alnum:24})", _CHECKOUT, "stripe.error.CardError"),
    T("Your card has insufficient funds. (request ${req}, charge ch_${alnum:24})", _CHECKOUT, "stripe.error.CardError"),
    T(
        "timed out after ${dur} waiting for https://api.stripe.com/v1/payment_intents/pi_${alnum:24}",
        _CHECKOUT,
        "TimeoutError",
    ),
    T("connection to payments-db at ${ip}:5432 timed out", _CHECKOUT, "ConnectionError"),
    T("connection to payments-db at ${ip}:5432 refused", _CHECKOUT, "ConnectionError"),
    T("invalid coupon code '${alnum:8}' for cart ${uuid}", _CHECKOUT, "ValueError"),
    T("cart ${uuid} total ${float} does not match payment intent amount ${float}", _CHECKOUT, "AssertionError", rare=2),
    T("user ${uid} not found", _USERS, "NotFound"),
    T("user ${uid} not authorized to view account ${uuid}", _USERS, "Forbidden"),
    T("user ${uid} not authorized to edit account ${uuid}", _USERS, "Forbidden"),
    T("'NoneType' object has no attribute 'email'\n${stack:users}", _USERS, "AttributeError"),
    T("invalid password for ${email} from ${ip} (attempt ${int:1:5} of 5)", _LOGIN),
    T("account ${email} locked after ${int:5:10} failed attempts", _LOGIN),
    T("MFA code expired for ${email}", _LOGIN),
    T("MFA code invalid for ${email}", _LOGIN),
    T("session token for ${uid} revoked at ${ts}", _LOGIN, rare=1),
    T("Elasticsearch query timed out after ${int:1000:30000}ms on index products-${int:1:30}", _SEARCH, "TimeoutError"),
    T('upstream search-svc returned 503 Service Unavailable for query "${query}"', _SEARCH),
    T("query too long: ${int:1025:5000} chars (max 1024)", _SEARCH, "ValueError"),
    T("[Errno 13] Permission denied: '${path}'", _UPLOAD, "PermissionError"),
    T("[Errno 28] No space left on device: '${path}'", _UPLOAD, "OSError"),
    T("file too large: ${size} exceeds limit of 10MB", _UPLOAD, "ValueError"),
    T("unsupported media type image/${choice:heic|tiff|bmp|webp} for upload ${uuid}", _UPLOAD, "ValueError"),
    T(
        "virus scanner rejected upload ${uuid}: ${choice:Eicar-Test-Signature|Win.Trojan.Agent|Js.Exploit.Blacole}",
        _UPLOAD,
        rare=2,
    ),
    T(
        "${email}: (550, b'5.1.1 The email account that you tried to reach does not exist.')",
        _MAIL,
        "SMTPRecipientsRefused",
    ),
    T("Connection unexpectedly closed: [Errno 104] Connection reset by peer", _MAIL, "SMTPServerDisconnected"),
    T("SMTP connect to smtp.${choice:sendgrid|mailgun|postmark}.net:587 timed out after ${dur}", _MAIL, "TimeoutError"),
    T(
        "template ${choice:welcome|reset_password|invoice|digest} rendering failed: undefined variable 'first_name'",
        _MAIL,
        "TemplateError",
    ),
    T(
        '(psycopg2.OperationalError) could not connect to server: Connection refused\n\tIs the server running on host "${ip}" and accepting\n\tTCP/IP connections on port 5432?',
        _ORDERS,
        "OperationalError",
    ),
    T(
        "(psycopg2.errors.QueryCanceled) canceling statement due to statement timeout [SQL: SELECT orders.id FROM orders WHERE orders.user_id = %(user_id_1)s] [parameters: {'user_id_1': ${int}}]",
        _ORDERS,
        "OperationalError",
    ),
    T(
        '(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "orders_pkey" DETAIL: Key (id)=(${int}) already exists.',
        _ORDERS,
        "IntegrityError",
    ),
    T("order ${int} for tenant ${tenant} in region ${region} stuck in PENDING for ${dur}", _ORDERS),
    T("division by zero\n${stack:reports}", _REPORTS, "ZeroDivisionError"),
    T("report ${uuid} for tenant ${tenant} exceeded row limit (${int:100001:900000} > 100000)", _REPORTS),
    T("report export to s3://reports-${tenant}/${uuid}.csv failed: AccessDenied", _REPORTS, rare=1),
    # Hard on purpose: one fault whose plain-word value takes only two values in the window.
    T("monthly export quota reached for tenant ${choice:acme|globex}", _REPORTS),
]

_LLM, _WEB, _EXEC, _READ, _FETCH, _SQL, _BROWSER = (
    "llm.chat",
    "tool.web_search",
    "tool.code_exec",
    "tool.read_file",
    "tool.http_fetch",
    "tool.sql_query",
    "tool.browser",
)
AGENT_TOOLS = [
    T(
        "Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4o in organization org-${alnum:24} on tokens per min (TPM): Limit 30000, Used ${int:20000:30000}, Requested ${int:100:9000}. Please try again in ${float}s.', 'type': 'tokens', 'param': None, 'code': 'rate_limit_exceeded'}}",
        _LLM,
        "openai.RateLimitError",
    ),
    T(
        "Error code: 400 - {'error': {'message': \"This model's maximum context length is 128000 tokens. However, your messages resulted in ${int:128001:300000} tokens. Please reduce the length of the messages.\", 'type': 'invalid_request_error', 'param': 'messages', 'code': 'context_length_exceeded'}}",
        _LLM,
        "openai.BadRequestError",
    ),
    T("Request timed out.", _LLM, "openai.APITimeoutError"),
    T("Connection error.", _LLM, "openai.APIConnectionError"),
    T(
        "Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}",
        _LLM,
        "anthropic.InternalServerError",
    ),
    T(
        "model returned invalid JSON for tool call ${alnum:24}: Expecting ',' delimiter: line 1 column ${int:2:900} (char ${int:1:899})",
        _LLM,
        "JSONDecodeError",
    ),
    T(
        "model returned invalid JSON for tool call ${alnum:24}: Unterminated string starting at: line 1 column ${int:2:900} (char ${int:1:899})",
        _LLM,
        "JSONDecodeError",
    ),
    T("search provider returned HTTP 429 Too Many Requests; retry after ${int:1:60}s", _WEB),
    T('search for "${query}" timed out after ${dur}', _WEB, "TimeoutError"),
    T('search for "${query}" returned no results', _WEB, rare=2),
    T(
        "process exited with code 1: ModuleNotFoundError: No module named '${choice:pandas|numpy|requests|scipy|torch}'",
        _EXEC,
    ),
    T("sandbox execution timed out after ${int:30:300}s", _EXEC, "TimeoutError"),
    T("sandbox killed: memory limit of ${size} exceeded (peak ${size})", _EXEC),
    T("process exited with code ${int:2:2}: SyntaxError: invalid syntax (line ${int:1:80})", _EXEC),
    T("[Errno 2] No such file or directory: '${path}'", _READ, "FileNotFoundError"),
    T("[Errno 13] Permission denied: '${path}'", _READ, "PermissionError"),
    T("[Errno 21] Is a directory: '${path}'", _READ, "IsADirectoryError"),
    T("'utf-8' codec can't decode byte 0x${hex:2} in position ${int}: invalid start byte", _READ, "UnicodeDecodeError"),
    T(
        "'utf-8' codec can't decode byte 0x${hex:2} in position ${int}: invalid continuation byte",
        _READ,
        "UnicodeDecodeError",
    ),
    T("Client error '404 Not Found' for url '${url}'", _FETCH, "httpx.HTTPStatusError"),
    T("Client error '403 Forbidden' for url '${url}'", _FETCH, "httpx.HTTPStatusError"),
    T("Server error '502 Bad Gateway' for url '${url}'", _FETCH, "httpx.HTTPStatusError"),
    T(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired (_ssl.c:1006)",
        _FETCH,
        "ssl.SSLCertVerificationError",
    ),
    T(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)",
        _FETCH,
        "ssl.SSLCertVerificationError",
    ),
    T("response from ${url} exceeded ${size} body limit", _FETCH, rare=1),
    T('relation "${choice:customers|invoices|events|sessions}" does not exist', _SQL, "ProgrammingError"),
    T('column "${choice:created|status|amount|email}" does not exist', _SQL, "ProgrammingError"),
    T('syntax error at or near "${choice:FROM|WHERE|SELECT|)}"', _SQL, "ProgrammingError"),
    T("canceling statement due to statement timeout", _SQL, "QueryCanceled"),
    T(
        'Timeout ${int:1000:30000}ms exceeded while waiting for selector "#${choice:login|submit|search-box|accept-cookies}"',
        _BROWSER,
        "TimeoutError",
    ),
    T("net::ERR_NAME_NOT_RESOLVED at ${url}", _BROWSER),
    T("net::ERR_CONNECTION_REFUSED at ${url}", _BROWSER),
    T("net::ERR_CERT_DATE_INVALID at ${url}", _BROWSER, rare=2),
]

_ETL, _CONSUMER, _REINDEX, _SPARK = "job.nightly_etl", "consumer.orders", "batch.reindex", "spark.aggregate"
JVM_PIPELINE = [
    T(
        "HikariPool-1 - Connection is not available, request timed out after ${int:30000:30010}ms.",
        _ETL,
        "java.sql.SQLTransientConnectionException",
    ),
    T(
        'Cannot invoke "String.length()" because "<local${int:1:9}>" is null${jstack:etl}',
        _ETL,
        "java.lang.NullPointerException",
    ),
    T("Java heap space", _ETL, "java.lang.OutOfMemoryError"),
    T("GC overhead limit exceeded", _ETL, "java.lang.OutOfMemoryError"),
    T(
        "Access Denied (Service: Amazon S3; Status Code: 403; Error Code: AccessDenied; Request ID: ${hex:16}; S3 Extended Request ID: ${alnum:56}=)",
        _ETL,
        "com.amazonaws.services.s3.model.AmazonS3Exception",
    ),
    T(
        "The specified key does not exist. (Service: Amazon S3; Status Code: 404; Error Code: NoSuchKey; Request ID: ${hex:16}; S3 Extended Request ID: ${alnum:56}=)",
        _ETL,
        "com.amazonaws.services.s3.model.AmazonS3Exception",
    ),
    T(
        "Slow Down (Service: Amazon S3; Status Code: 503; Error Code: SlowDown; Request ID: ${hex:16}; S3 Extended Request ID: ${alnum:56}=)",
        _ETL,
        "com.amazonaws.services.s3.model.AmazonS3Exception",
    ),
    T(
        "Input path does not exist: s3a://lake-${tenant}/raw/${int:2019:2024}/${int:1:12}/",
        _ETL,
        "org.apache.hadoop.mapred.InvalidInputException",
    ),
    T(
        "Expiring ${int:1:500} record(s) for orders-${int:0:11}:${int:120000:130000} ms has passed since batch creation",
        _CONSUMER,
        "org.apache.kafka.common.errors.TimeoutException",
    ),
    T(
        "This server is not the leader for that topic-partition.",
        _CONSUMER,
        "org.apache.kafka.common.errors.NotLeaderOrFollowerException",
    ),
    T(
        "Unexpected character ('${choice:<|}|]|n}' (code ${int:40:130})): was expecting double-quote to start field name\n at [Source: (String)\"${alnum:30}\"; line: 1, column: ${int:2:80}]",
        _CONSUMER,
        "com.fasterxml.jackson.core.JsonParseException",
    ),
    T(
        'Unrecognized field "${choice:discount|giftWrap|channel|promo}" (class com.acme.orders.OrderEvent), not marked as ignorable',
        _CONSUMER,
        "com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException",
    ),
    T(
        "Commit cannot be completed since the group has already rebalanced and assigned the partitions to another member.",
        _CONSUMER,
        "org.apache.kafka.clients.consumer.CommitFailedException",
    ),
    T(
        "Offset commit failed on partition orders-${int:0:11} at offset ${int}: The coordinator is not available.",
        _CONSUMER,
        rare=2,
    ),
    T(
        "Elasticsearch exception [type=es_rejected_execution_exception, reason=rejected execution of coordinating operation [coordinating_and_primary_bytes=${int}, replica_bytes=0, all_bytes=${int}, coordinating_operation_bytes=${int}, max_coordinating_and_primary_bytes=${int}]]",
        _REINDEX,
        "ElasticsearchStatusException",
    ),
    T(
        "Elasticsearch exception [type=version_conflict_engine_exception, reason=[${alnum:20}]: version conflict, required seqNo [${int}], primary term [1]. current document has seqNo [${int}] and primary term [1]]",
        _REINDEX,
        "ElasticsearchStatusException",
    ),
    T(
        "index [products-${int:1:30}] blocked by: [FORBIDDEN/12/index read-only / allow delete (api)];",
        _REINDEX,
        "ClusterBlockException",
    ),
    T("Connection refused: localhost/127.0.0.1:9200", _REINDEX, "java.net.ConnectException"),
    T("Read timed out", _REINDEX, "java.net.SocketTimeoutException"),
    T("Connect timed out", _REINDEX, "java.net.SocketTimeoutException"),
    T(
        "Job aborted due to stage failure: Task ${int:0:200} in stage ${f1} failed 4 times, most recent failure: Lost task ${f1} in stage ${f1} (TID ${int}) (${ip} executor ${int:1:40}): ExecutorLostFailure (executor ${int:1:40} exited caused by one of the running tasks) Reason: Container killed by YARN for exceeding memory limits. ${float} GB of ${int:4:16} GB physical memory used.",
        _SPARK,
        "org.apache.spark.SparkException",
    ),
    T(
        "Job aborted due to stage failure: Total size of serialized results of ${int:100:900} tasks (${int:1025:4000}.0 MiB) is bigger than spark.driver.maxResultSize (1024.0 MiB)",
        _SPARK,
        "org.apache.spark.SparkException",
    ),
    T(
        'Cannot resolve column name "${choice:order_ts|customer_id|amount_eur|sku}" among (${choice:id, ts, amount|id, customer, total|sku, qty})',
        _SPARK,
        "org.apache.spark.sql.AnalysisException",
    ),
    T("Python worker exited unexpectedly (crashed)", _SPARK, "org.apache.spark.SparkException", rare=1),
    T(
        "Failed to send RPC ${int} to /${ip}:${port}: java.nio.channels.ClosedChannelException",
        _SPARK,
        "java.io.IOException",
    ),
]

HDFS = [
    T("Receiving block ${blk} src: /${ip}:${port} dest: /${ip}:50010"),
    T("Received block ${blk} of size ${int:1024:67108864} from /${ip}"),
    T("PacketResponder ${int:0:2} for block ${blk} terminating"),
    T("BLOCK* NameSystem.addStoredBlock: blockMap updated: ${ip}:50010 is added to ${blk} size ${int:1024:67108864}"),
    T(
        "BLOCK* NameSystem.allocateBlock: /user/root/rand/_temporary/_task_${int}_${int:1:99}_m_${int}_0/part-${int}. ${blk}"
    ),
    T("Verification succeeded for ${blk}"),
    T("Deleting block ${blk} file /mnt/hadoop/dfs/data/current/subdir${int:0:63}/${blk}"),
    T("${ip}:50010 Served block ${blk} to /${ip}"),
    T("${ip}:50010:Got exception while serving ${blk} to /${ip}:"),
    T("BLOCK* NameSystem.delete: ${blk} is added to invalidSet of ${ip}:50010"),
    T("BLOCK* ask ${ip}:50010 to delete ${blklist}"),
    T("BLOCK* ask ${ip}:50010 to replicate ${blk} to datanode(s) ${ip}:50010"),
    T("Receiving empty packet for block ${blk}"),
    T("Exception in receiveBlock for block ${blk} java.io.IOException: Connection reset by peer"),
    T(
        "PacketResponder ${blk} ${int:0:2} Exception java.io.InterruptedIOException: Interruped while waiting for IO on channel java.nio.channels.SocketChannel[connected local=/${ip}:${port} remote=/${ip}:${port}]. ${int:0:60000} millis timeout left."
    ),
    T("writeBlock ${blk} received exception java.io.IOException: Could not read from stream"),
    T(
        "writeBlock ${blk} received exception java.net.SocketTimeoutException: ${int:60000:480000} millis timeout while waiting for channel to be ready for read. ch : java.nio.channels.SocketChannel[connected local=/${ip}:${port} remote=/${ip}:${port}]"
    ),
    T("${ip}:50010:Transmitted block ${blk} to /${ip}:50010"),
    T("${ip}:50010 Starting thread to transfer block ${blk} to ${ip}:50010"),
    T("PendingReplicationMonitor timed out block ${blk}", rare=2),
    T(
        "BLOCK* NameSystem.addStoredBlock: Redundant addStoredBlock request received for ${blk} on ${ip}:50010 size ${int}",
        rare=1,
    ),
    T("Unexpected error trying to delete block ${blk}. BlockInfo not found in volumeMap.", rare=1),
    T("BLOCK* Removing block ${blk} from neededReplications as it does not belong to any file.", rare=2),
    T("Changing block file offset of block ${blk} from ${int} to ${int} meta file offset to ${int}"),
    T("Reopen Block ${blk}"),
]

HADOOP_SPARK = [
    T("Running task ${f1} in stage ${f1} (TID ${int})"),
    T("Finished task ${f1} in stage ${f1} (TID ${int}). ${int} bytes result sent to driver"),
    T("Block ${rdd} stored as values in memory (estimated size ${float} KB, free ${float} MB)"),
    T("Block broadcast_${int:0:40} stored as values in memory (estimated size ${float} KB, free ${float} MB)"),
    T("Found block ${rdd} locally"),
    T("Started reading broadcast variable ${int:0:40}"),
    T("Reading broadcast variable ${int:0:40} took ${int:1:900} ms"),
    T("Partition ${rdd} not found, computing it"),
    T("Getting ${int:0:200} non-empty blocks out of ${int:0:200} blocks"),
    T("Started ${int:0:50} remote fetches in ${int:0:90} ms"),
    T("Registered signal handlers for [TERM, HUP, INT]"),
    T("Changing view acls to: ${user},${user}"),
    T("Changing modify acls to: ${user},${user}"),
    T(
        "SecurityManager: authentication disabled; ui acls disabled; users with view permissions: Set(${user}, ${user}); users with modify permissions: Set(${user}, ${user})"
    ),
    T("Successfully registered with driver"),
    T("Executor is trying to kill task ${f1} in stage ${f1} (TID ${int})"),
    T("Exception in task ${f1} in stage ${f1} (TID ${int})", rare=2),
    T("${attempt} TaskAttempt Transitioned from ${state} to ${state}"),
    T("task_${int}_${int:1:99}_m_${int} Task Transitioned from ${state} to ${state}"),
    T("${job}Job Transitioned from ${state} to ${state}"),
    T("Progress of TaskAttempt ${attempt} is : ${float}"),
    T("Assigned container ${container} to ${attempt}"),
    T(
        "Before Scheduling: PendingReds:${int:0:9} ScheduledMaps:${int:0:20} ScheduledReds:${int:0:9} AssignedMaps:${int:0:20} AssignedReds:${int:0:9} CompletedMaps:${int:0:20} CompletedReds:0 ContAlloc:${int:0:20} ContRel:0 HostLocal:${int:0:20} RackLocal:0"
    ),
    T(
        "After Scheduling: PendingReds:${int:0:9} ScheduledMaps:${int:0:20} ScheduledReds:${int:0:9} AssignedMaps:${int:0:20} AssignedReds:${int:0:9} CompletedMaps:${int:0:20} CompletedReds:0 ContAlloc:${int:0:20} ContRel:0 HostLocal:${int:0:20} RackLocal:0"
    ),
    T("Recalculating schedule, headroom=<memory:${int}, vCores:${int:-5:10}>"),
    T("Reduce slow start threshold not met. completedMapsForReduceSlowstart ${int:1:9}"),
    T("Received completed container ${container}"),
    T(
        "Diagnostics report from ${attempt}: Error: java.net.NoRouteToHostException: No Route to Host from  MININT-${alnum:7}/${ip} to ${node}:${port} failed on socket timeout exception: java.net.NoRouteToHostException: No route to host: no further information",
        rare=2,
    ),
    T("Address change detected. Old: ${node}/${ip}:${port} New: ${node}:${port}"),
    T("Retrying connect to server: ${node}/${ip}:${port}. Already tried ${int:0:9} time(s); maximum retries is 10"),
    T("ERROR IN CONTACTING RM.", rare=1),
    T(
        "Communication exception: java.net.ConnectException: Call From MININT-${alnum:7}/${ip} to ${node}:${port} failed on connection exception: java.net.ConnectException: Connection refused",
        rare=2,
    ),
    T("Deleting staging directory hdfs://${node}:9000 /tmp/hadoop-yarn/staging/${user}/.staging/${job}"),
    T("Num completed Tasks: ${int:1:20}"),
    T("Task succeeded with attempt ${attempt}"),
    T("Shuffle port returned by ContainerManager for ${attempt} : ${int:1024:65535}"),
    T("TaskAttempt: [${attempt}] using containerId: [${container} on NM: [${node}:${port}]"),
]

OPENSSH_LINUX = [
    T("Invalid user ${user} from ${ip}"),
    T("input_userauth_request: invalid user ${user} [preauth]"),
    T("Failed password for invalid user ${user} from ${ip} port ${port} ssh2"),
    T("Failed password for ${user} from ${ip} port ${port} ssh2"),
    T("Accepted password for ${user} from ${ip} port ${port} ssh2"),
    T("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=${ip}  user=${user}"),
    T("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=${rhost}"),
    T("pam_unix(sshd:auth): check pass; user unknown"),
    T("Received disconnect from ${ip}: 11: Bye Bye [preauth]"),
    T("Connection closed by ${ip} [preauth]"),
    T("reverse mapping checking getaddrinfo for ${rhost} [${ip}] failed - POSSIBLE BREAK-IN ATTEMPT!"),
    T("Did not receive identification string from ${ip}"),
    T("error: Received disconnect from ${ip}: 3: com.jcraft.jsch.JSchException: Auth fail [preauth]"),
    T("PAM ${int:2:5} more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=${ip}  user=${user}"),
    T("PAM service(sshd) ignoring max retries; ${int:4:6} > 3"),
    T("Disconnecting: Too many authentication failures for ${user} [preauth]"),
    T("message repeated ${int:2:5} times: [ Failed password for ${user} from ${ip} port ${port} ssh2]"),
    T("session opened for user ${user} by (uid=${int:0:1000})"),
    T("session closed for user ${user}"),
    T("Bad protocol version identification '${alnum:12}' from ${ip} port ${port}"),
    T("fatal: Read from socket failed: Connection reset by peer [preauth]"),
    T("Address ${ip} maps to ${rhost}, but this does not map back to the address - POSSIBLE BREAK-IN ATTEMPT!"),
    T("Server listening on 0.0.0.0 port 22.", rare=1),
    T("Received signal 15; terminating.", rare=1),
    T("Timeout, client not responding.", rare=2),
    T("Authentication refused: bad ownership or modes for directory /home/${user}"),
    T("User ${user} from ${ip} not allowed because not listed in AllowUsers"),
    T("ALERT exited abnormally with [1]"),
    T("connection from ${ip} (${rhost}) at Sun Jul ${int:10:28} ${int:10:23}:${int:10:59}:${int:10:59} 2005"),
    T("Out of Memory: Killed process ${int} (${choice:httpd|java|mysqld|sshd|python})."),
    T("FAILED LOGIN ${int:1:3} FROM (${rhost}) FOR ${user}, Authentication failure"),
    T("Authentication failed from ${rhost} (${ip}): Software caused connection abort"),
    # Hard on purpose: a rare statement whose user is likely to differ between its two records,
    # and three statements that differ only in one plain verb.
    T("pam_unix(cron:session): session opened for user ${user} by (uid=0)", rare=2),
    T("Starting Avahi mDNS/DNS-SD Stack"),
    T("Stopping Avahi mDNS/DNS-SD Stack"),
    T("Reloading Avahi mDNS/DNS-SD Stack"),
]

ANDROID = [
    T(
        'acquire lock=${int}, flags=0x${hex:1}, tag="${choice:View Lock|WindowManager|AudioMix|*alarm*|NlpWakeLock}", name=${pkg}, ws=null, uid=${int:1000:20000}, pid=${int}'
    ),
    T(
        'release lock=${int}, flags=0x${hex:1}, tag="${choice:View Lock|WindowManager|AudioMix|*alarm*|NlpWakeLock}", name=${pkg}, ws=null, uid=${int:1000:20000}, pid=${int}'
    ),
    T(
        "setSystemUiVisibility vis=${hex:2} mask=${hex:2} oldVal=${hex:2} newVal=${hex:2} diff=${hex:2} fullscreenStackVis=0 dockedStackVis=0 fullscreenStackBounds=Rect(0, 0 - 0, 0) dockedStackBounds=Rect(0, 0 - 0, 0)"
    ),
    T("Skipping ${int:30:300} frames!  The application may be doing too much work on its main thread."),
    T(
        "printFreezingDisplayLogsopening app wtoken = AppWindowToken{${hex:7} token=Token{${hex:7} ActivityRecord{${hex:7} u0 ${pkg}/${activity} t${int:1:999}}}}, allDrawn= ${bool}, startingDisplayed =  ${bool}, startingMoved =  false, isRelaunching =  false"
    ),
    T("Start proc ${int}:${pkg}/u0a${int:1:300} for activity ${pkg}/${activity}"),
    T("Start proc ${int}:${pkg}/u0a${int:1:300} for service ${pkg}/${service}"),
    T("Process ${pkg} (pid ${int}) has died"),
    T("Killing ${int}:${pkg}/u0a${int:1:300} (adj ${int:100:999}): empty #${int:17:40}"),
    T("cleanUpApplicationRecord -- ${int}"),
    T("getTaskSnapshot: taskId=${int:1:999} not found"),
    T("updateFlagState: mFlags = 0x${hex:4}, mRealFlags = 0x${hex:4}, mNewFlags = 0x${hex:4}"),
    T("onReceive action: android.intent.action.SCREEN_${choice:ON|OFF}"),
    T(
        'Acquiring suspend blocker "${choice:PowerManagerService.Display|PowerManagerService.WakeLocks|PowerManagerService.Broadcasts}".'
    ),
    T(
        'Releasing suspend blocker "${choice:PowerManagerService.Display|PowerManagerService.WakeLocks|PowerManagerService.Broadcasts}".'
    ),
    T(
        "notification: Notification(channel=${choice:msg|default|sync|alarm} pri=${int:-2:2} contentView=null vibrate=null sound=null defaults=0x0 flags=0x${hex:2} color=0x00000000 vis=PRIVATE)"
    ),
    T("Unable to start service Intent { act=com.google.android.c2dm.intent.RECEIVE pkg=${pkg} } U=0: not found"),
    T(
        "Background start not allowed: service Intent { cmp=${pkg}/${service} } to ${pkg} from pid=${int} uid=${int:1000:20000} pkg=${pkg}"
    ),
    T("Force stopping ${pkg} appid=${int:1000:20000} user=0: from pid ${int}"),
    T("ANR in ${pkg} (Reason: Input dispatching timed out)", rare=2),
    T("FATAL EXCEPTION: main", rare=1),
    T("Failed to find provider info for ${pkg}.provider"),
    T("Sending non-protected broadcast ${pkg}.ACTION_UPDATE from system ${int}:${pkg}/${int:1000:20000} pkg ${pkg}"),
    T("handleMessage: msg.what = ${int:1:99}"),
    T("isScreenOn: ${bool}"),
    T("mCurrentFocus=Window{${hex:7} u0 ${pkg}/${pkg}${activity}}"),
    T("Animation done in ${int:10:900}ms"),
    T("removeWindowToken: Attempted to remove non-existing token: android.os.Binder@${hex:7}", rare=2),
]

WINDOWS_CBS = [
    T(
        "Loaded Servicing Stack v${ver} with Core: C:\\Windows\\winsxs\\amd64_microsoft-windows-servicingstack_31bf3856ad364e35_${ver}_none_${hex:16}\\cbscore.dll"
    ),
    T("Session: ${int}_${int} initialized by client ${choice:WindowsUpdateAgent|DeviceSetup|TrustedInstaller|Dism}."),
    T(
        "Read out cached package applicability for package: Package_for_KB${int:2000000:3999999}~31bf3856ad364e35~amd64~~${ver}, ApplicableState: ${int:0:112}, CurrentState:${int:0:112}"
    ),
    T("SQM: Initializing online with Windows opt-in: False"),
    T("SQM: Cleaning up report files older than 10 days."),
    T("SQM: Requesting upload of all unsent reports."),
    T(
        "SQM: Failed to start upload with file pattern: C:\\Windows\\servicing\\sqm\\*_std.sqm, flags: 0x2 [HRESULT = 0x80004005 - E_FAIL]"
    ),
    T("SQM: Failed to start standard sample upload. [HRESULT = 0x80004005 - E_FAIL]"),
    T("SQM: Queued 0 file(s) for upload with pattern: C:\\Windows\\servicing\\sqm\\*_all.sqm, flags: 0x6"),
    T("SQM: Warning: Failed to upload all unsent reports. [HRESULT = 0x80004005 - E_FAIL]"),
    T("Warning: Unrecognized packageExtended attribute."),
    T("Expecting attribute name [HRESULT = 0x800f080d - CBS_E_MANIFEST_INVALID_ITEM]"),
    T("Failed to get next element [HRESULT = 0x800f080d - CBS_E_MANIFEST_INVALID_ITEM]"),
    T("Failed to internally open package. [HRESULT = 0x800f0805 - CBS_E_INVALID_PACKAGE]"),
    T("Failed to OpenPackage using worker session [HRESULT = 0x800f0805]"),
    T("Ending TrustedInstaller initialization."),
    T("Starting TrustedInstaller initialization."),
    T("Ending the TrustedInstaller main loop."),
    T("Starting the TrustedInstaller main loop."),
    T("TrustedInstaller service starts successfully."),
    T(
        "No startup processing required, TrustedInstaller service was not set as autostart, or else a reboot is still pending."
    ),
    T("NonStart: Checking to ensure startup processing was not required."),
    T("Idle processing thread terminated normally"),
    T("Trusted Installer is shutting down because: SHUTDOWN_REASON_AUTOSTOP"),
    T("Doqe: Recording result: 0x00000000, for Inf: ${choice:netrtl|usbport|hdaudio|prnms001|wvmic}"),
    T("CSI Store ${int} (0x${hex:16}) initialized"),
    T(
        "Failed to find a matching version for servicing stack: C:\\Windows\\winsxs\\amd64_microsoft-windows-servicingstack_31bf3856ad364e35_${ver}_none_${hex:16}\\",
        rare=1,
    ),
    T("Reboot mark refs: ${int:0:9}", rare=2),
    T("Scavenge: Begin CSI Store", rare=2),
]

BGL_HPC = [
    T("instruction cache parity error corrected"),
    T("data cache parity error corrected"),
    T("${int:1:9999} double-hummer alignment exceptions"),
    T("CE sym ${int:0:31}, at 0x${hex:8}, mask 0x${hex:2}"),
    T("generating core.${int}"),
    T("total of ${int:1:40} ddr error(s) detected and corrected"),
    T("ddr: excessive soft failures, consider replacing the card", rare=1),
    T("data TLB error interrupt"),
    T("instruction address: 0x${hex:8}"),
    T("machine check interrupt (bit=0x${hex:2}): L2 dcache unit data parity error"),
    T("ciod: failed to read message prefix on control stream (CioStream socket to ${ip}:${port}"),
    T("ciod: LOGIN chdir(/p/gb1/stella/RAPTOR/${int:1000:9999}/run) failed: No such file or directory"),
    T(
        "ciod: Error loading /g/g0/${user}/bin/${choice:raptor|mmcs|sweep3d|irs}: invalid or missing program image, Exec format error"
    ),
    T("Lustre mount FAILED : bglio${int:1:99} : block_id : location"),
    T("MidplaneSwitchController performing bit sparing on ${loc} bit ${int:0:31}"),
    T(
        "idoproxydb hit ASSERT condition: ASSERT expression=0 Source file=idotransportmgr.cpp Source line=${int:100:2000} Function=int IdoTransportMgr::SendPacket(IdoUdpMgr*, BglCtlPavTrace*)"
    ),
    T("NodeCard temperature sensor chip ${loc} is not accessible"),
    T("Component State Change: Component \\042${node}\\042 is in the unavailable state (HWID=${int})"),
    T("Node ${node} has detected an available network connection on network ${ip} via interface alt0"),
    T("PSU failure ambient=${int:20:40}", rare=2),
    T("ServerFileSystem domain storage${int:1:9} is full", rare=2),
    T("Temperature (${int:60:99}C) exceeds warning threshold"),
    T("Temperature (${int:60:99}C) exceeds critical threshold"),
    T("Link error on broadcast tree Interconnect-${int:0:9}T${int:0:9}:${int:0:9}:${int:0:9}:${int:0:9}"),
    T("risBoot command Result: Running.  Retries: ${int:0:3}"),
    T("${node} clusterAddMember (command ${int})"),
    T("Fan speeds ( ${fans} )"),
    T("NFS server ${node} not responding, still trying"),
    T("NFS server ${node} OK"),
    T(
        "EXT3-fs error (device sd${choice:a|b|c}${int:1:4}): ext3_find_entry: reading directory #${int} offset ${int}",
        rare=1,
    ),
    T("kernel: mptscsih: ioc0: attempting task abort! (sc=0x${hex:8})"),
    T("rts: kernel terminated for reason 100${int:0:9}"),
]

ZOOKEEPER = [
    T("Received connection request /${ip}:${port}"),
    T("Interrupted while waiting for message on queue"),
    T("Connection broken for id ${int:1:5}, my id = ${int:1:5}, error ="),
    T("Send worker leaving thread"),
    T("Notification time out: ${int:200:60000}"),
    T(
        "Notification: ${int:1:5} (n.leader), 0x${hex:9} (n.zxid), 0x${int:1:9} (n.round), ${choice:LOOKING|FOLLOWING|LEADING} (n.state), ${int:1:5} (n.sid), 0x${int:1:9} (n.peerEPoch), ${choice:LOOKING|FOLLOWING|LEADING} (my state)"
    ),
    T("Accepted socket connection from /${ip}:${port}"),
    T("Client attempting to establish new session at /${ip}:${port}"),
    T("Established session 0x${hex:15} with negotiated timeout ${int:4000:40000} for client /${ip}:${port}"),
    T("Closed socket connection for client /${ip}:${port} which had sessionid 0x${hex:15}"),
    T("Closed socket connection for client /${ip}:${port} (no session established for client)"),
    T("caught end of stream exception"),
    T("Exception causing close of session 0x${hex:15} due to java.io.IOException: ZooKeeperServer not running"),
    T("Expiring session 0x${hex:15}, timeout of ${int:4000:40000}ms exceeded"),
    T("Processed session termination for sessionid: 0x${hex:15}"),
    T("Cannot open channel to ${int:1:5} at election address /${ip}:${port}"),
    T("Connection request from old client /${ip}:${port}; will be dropped if server is in r-o mode"),
    T("Client attempting to renew session 0x${hex:15} at /${ip}:${port}"),
    T(
        "Got user-level KeeperException when processing sessionid:0x${hex:15} type:create cxid:0x${hex:2} zxid:0x${hex:9} txntype:-1 reqpath:n/a Error Path:/hbase/${choice:rs|backup-masters|splitlog} Error:KeeperErrorCode = NodeExists for /hbase/${choice:rs|backup-masters|splitlog}"
    ),
    T(
        "Got user-level KeeperException when processing sessionid:0x${hex:15} type:delete cxid:0x${hex:2} zxid:0x${hex:9} txntype:-1 reqpath:n/a Error Path:/hbase/${choice:rs|backup-masters|splitlog} Error:KeeperErrorCode = NoNode for /hbase/${choice:rs|backup-masters|splitlog}"
    ),
    T("Reading snapshot /var/lib/zookeeper/version-2/snapshot.${hex:9}", rare=1),
    T("Snapshotting: 0x${hex:9} to /var/lib/zookeeper/version-2/snapshot.${hex:9}"),
    T("${choice:FOLLOWING|LEADING} - LEADER ELECTION TOOK - ${int:10:9000}"),
    T("Have smaller server identifier, so dropping the connection: (${int:1:5}, ${int:1:5})"),
    T("shutdown of request processor complete"),
    T("Unexpected exception causing shutdown while sock still open", rare=1),
    T("Too many connections from /${ip} - max is 60", rare=2),
]

_HTTPD, _PROXY = "httpd", "proxifier"
APACHE_PROXIFIER = [
    T("jk2_init() Found child ${int:1000:9999} in scoreboard slot ${int:0:12}", _HTTPD),
    T("workerEnv.init() ok /etc/httpd/conf/workers2.properties", _HTTPD),
    T("mod_jk child workerEnv in error state ${int:6:9}", _HTTPD),
    T("[client ${ip}] Directory index forbidden by rule: /var/www/html/", _HTTPD),
    T("jk2_init() Can't find child ${int:1000:9999} in scoreboard", _HTTPD),
    T("mod_jk child init ${int:1:2} -${int:1:2}", _HTTPD),
    T("[client ${ip}] File does not exist: /var/www/html/${word}.${choice:php|html|gif}", _HTTPD),
    T("[client ${ip}] script not found or unable to stat: /var/www/cgi-bin/${word}", _HTTPD, rare=2),
    T("${prog} - ${dest} open through proxy proxy.cse.cuhk.edu.hk:5070 HTTPS", _PROXY),
    # One statement: Proxifier adds the size in KB or MB after a large byte count, per count
    # (human labels of such logs keep it one event; it was two templates here before).
    T("${prog} - ${dest} close, ${bytes} sent, ${bytes} received, lifetime ${life}", _PROXY),
    T(
        "${prog} - ${dest} error : Could not connect to proxy proxy.cse.cuhk.edu.hk:5070 - connection attempt failed with error ${int:10000:11004}",
        _PROXY,
    ),
    T(
        "${prog} - ${dest} error : Could not connect through proxy proxy.cse.cuhk.edu.hk:5070 - Proxy server cannot establish a connection with the target, status code ${int:500:504}",
        _PROXY,
    ),
    T("${prog} - ${dest} open directly", _PROXY),
    T("${prog} - ${dest} error : A connection request was canceled before the completion.", _PROXY, rare=2),
    T("${prog} - ${dest} error : Could not resolve ${dest}: host not found", _PROXY, rare=1),
]

# Written after the clusterer's rules were fixed, as a check on generality (not tuned against).
_B = "/var/lib/nova/instances/_base/"
OPENSTACK = [
    T(
        '${ip} "GET /v2/${hex:32}/servers/detail HTTP/1.1" status: 200 len: ${int:1500:2000} time: 0.${int:1000000:9999999}'
    ),
    T(
        '${ip} "POST /v2/${hex:32}/os-server-external-events HTTP/1.1" status: 200 len: ${int:300:400} time: 0.${int:1000000:9999999}'
    ),
    T('${ip} "DELETE /v2/${hex:32}/servers/${uuid} HTTP/1.1" status: 204 len: 203 time: 0.${int:1000000:9999999}'),
    # Four events, as human labels of such logs have them (it was one template with a word slot here before).
    T("[instance: ${uuid}] VM Started (Lifecycle Event)"),
    T("[instance: ${uuid}] VM Stopped (Lifecycle Event)"),
    T("[instance: ${uuid}] VM Paused (Lifecycle Event)"),
    T("[instance: ${uuid}] VM Resumed (Lifecycle Event)"),
    T("[instance: ${uuid}] Took ${float} seconds to spawn the instance on the hypervisor."),
    T("[instance: ${uuid}] Took ${float} seconds to destroy the instance on the hypervisor."),
    T("[instance: ${uuid}] Took ${float} seconds to build instance."),
    T("[instance: ${uuid}] Took ${float} seconds to deallocate network for instance."),
    T(
        "Running instance usage audit for host cp-${int:1:9}.slowvm1.tcloud-pg0.utah.cloudlab.us from ${ts} to ${ts}. ${int:1:9} instances."
    ),
    T("Active base files: " + _B + "${hex:40}"),
    T("Removable base files: " + _B + "${hex:40}"),
    T("Base or swap file too young to remove: " + _B + "${hex:40}"),
    T("[instance: ${uuid}] Creating image"),
    T("[instance: ${uuid}] Terminating instance"),
    T("[instance: ${uuid}] Deleting instance files /var/lib/nova/instances/${uuid}_del"),
    T("[instance: ${uuid}] Deletion of /var/lib/nova/instances/${uuid}_del complete"),
    T("[instance: ${uuid}] Claim successful"),
    T("[instance: ${uuid}] Attempting claim: memory ${int:512:4096} MB, disk ${int:1:40} GB, vcpus ${int:1:8} CPU"),
    T("[instance: ${uuid}] Total memory: ${int:10000:64000} MB, used: ${float} MB"),
    T("[instance: ${uuid}] memory limit: ${float} MB, free: ${float} MB"),
    T("[instance: ${uuid}] Total disk: ${int:10:900} GB, used: ${float} GB"),
    T("[instance: ${uuid}] disk limit not specified, defaulting to unlimited"),
    T("[instance: ${uuid}] vcpu limit not specified, defaulting to unlimited"),
    T("[instance: ${uuid}] Total vcpu: ${int:8:64} VCPU, used: ${float} VCPU"),
    T(
        "Final resource view: name=cp-${int:1:9}.slowvm1.tcloud-pg0.utah.cloudlab.us phys_ram=${int}MB used_ram=${int}MB phys_disk=${int}GB used_disk=${int}GB total_vcpus=${int:8:64} used_vcpus=${int:0:8} pci_stats=[]"
    ),
    T(
        "Compute_service record updated for cp-${int:1:9}.slowvm1.tcloud-pg0.utah.cloudlab.us:cp-${int:1:9}.slowvm1.tcloud-pg0.utah.cloudlab.us"
    ),
    T("Auditing locally available compute resources for node cp-${int:1:9}.slowvm1.tcloud-pg0.utah.cloudlab.us"),
    T("Unknown base file: " + _B + "${hex:40}", rare=2),
    T("image ${uuid} at (" + _B + "${hex:40}): checking"),
    T("[instance: ${uuid}] During sync_power_state the instance has a pending task (spawning). Skip.", rare=2),
    T("HTTP exception thrown: No instances found for any event", rare=1),
]

THUNDERBIRD = [
    T("session opened for user ${user} by (uid=0)"),
    T("session closed for user ${user}"),
    T("synchronized to ${ip}, stratum ${int:1:4}"),
    T("ib_sm.x[${int}]: [ib_sm_sweep.c:${int}]: No topology change"),
    T("ib_sm.x[${int}]: [ib_sm_sweep.c:${int}]: No configuration change required"),
    T("DHCPDISCOVER from 00:11:43:${hex:2}:${hex:2}:${hex:2} via eth${int:0:1}"),
    T("DHCPOFFER on ${ip} to 00:11:43:${hex:2}:${hex:2}:${hex:2} via eth${int:0:1}"),
    T("DHCPREQUEST for ${ip} (${ip}) from 00:11:43:${hex:2}:${hex:2}:${hex:2} via eth${int:0:1}"),
    T("DHCPACK on ${ip} to 00:11:43:${hex:2}:${hex:2}:${hex:2} via eth${int:0:1}"),
    T("(root) CMD (run-parts /etc/cron.hourly)"),
    T("(${user}) CMD (/usr/lib/sa/sa1 1 1)"),
    T("Accepted publickey for ${user} from ${ip} port ${port} ssh2"),
    T("kernel: e1000: eth0: e1000_watchdog: NIC Link is Up 1000 Mbps Full Duplex"),
    T("kernel: e1000: eth0: e1000_watchdog: NIC Link is Down"),
    T("pam_unix(crond:session): session opened for user ${user} by (uid=0)"),
    T("Server listening on :: port 22."),
    T("Received disconnect from ${ip}: 11: disconnected by user"),
    T("rpc.statd[${int}]: Version 1.0.7 Starting"),
    T("kernel: Losing some ticks... checking if CPU frequency changed."),
    T("kernel: EXT3-fs: mounted filesystem with ordered data mode."),
    T("nfs: server ${node} not responding, still trying"),
    T("nfs: server ${node} OK"),
    T("postfix/postdrop[${int}]: warning: unable to look up public/pickup: No such file or directory"),
    T("kernel: mptscsih: ioc0: attempting task abort! (sc=${hex:16})"),
    T("kernel: mptscsih: ioc0: task abort: SUCCESS (sc=${hex:16})", rare=2),
    T("kernel: Out of Memory: Killed process ${int} (${choice:java|mpirun|sshd})."),
    T("xinetd[${int}]: START: ${choice:rsync|tftp|auth} pid=${int} from=${ip}"),
    T("xinetd[${int}]: EXIT: ${choice:rsync|tftp|auth} status=0 pid=${int} duration=${int}(sec)"),
]

MAC = [
    T("ARPT: ${int}.${int}: wl0: wl_update_tcpkeep_seq: Original Seq: ${int}, Ack: ${int}, Win size: ${int}"),
    T("ARPT: ${int}.${int}: wl0: MDNS: IPV4 Addr: ${ip}"),
    T("ARPT: ${int}.${int}: wl0: MDNS: IPV6 Addr: ${ip6}"),
    T("Warning: Can't delete mount point: /Volumes/${choice:Backup|Photos|Untitled}"),
    T("CCFile::captureLog Received Capture notice id: ${float}, reason = AuthRequestTimeout:-1008"),
    T(
        "com.apple.icloud.fmfd.heartbeat: scheduler_evaluate_activity told me to run this job; however, but the start time isn't for ${int} seconds.  Ignoring."
    ),
    T("[${float}] AirPort: Link Down on awdl0. Reason 1 (Unspecified)."),
    T("[${float}] AirPort: Link Up on en0"),
    T(
        "Sandbox: ${choice:mdworker|QuickLookSatellite|com.apple.WebKit}(${int}) deny(1) file-read-data /Users/${user}/Library/${word}"
    ),
    T(
        "BUG in libdispatch client: kevent[machport] monitored resource vanished before the source cancel handler was invoked",
        rare=1,
    ),
    T(
        "tcp_connection_tls_session_error_callback_imp ${int} __tcp_connection_tls_session_callback_write_block_invoke.434 error 22"
    ),
    T("Cocoa scripting error for '0x${hex:8}': four character codes must be four characters long."),
    T("network changed: v4(en0-:${ip}) v6(en0:${ip6}) DNS! Proxy SMB"),
    T("PM response took ${int:1:3000} ms (${int}, ${choice:powerd|WindowServer|mds|coreaudiod})"),
    T("hibernate_page_list_setall(preflight 1) start"),
    T("hibernate_alloc_page_lists pageCount: ${int}"),
    T("en0: BSSID changed to 5c:50:15:${hex:2}:${hex:2}:${hex:2}"),
    T("en0: channel changed to ${int:1:149}"),
    T(
        "IOThunderboltSwitch<0x${hex:16}>(0x0)::listenerCallback - Thunderbolt HPD packet for route = 0x0 port = ${int:1:12} unplug = ${int:0:1}"
    ),
    T("AppleCamIn::systemWakeCall - messageType = 0x${hex:8}"),
    T("Bluetooth -- LE is supported - Disable LE meta event"),
    T("Unable to retrieve ${choice:WiFi|Ethernet} info: (null)", rare=2),
]

HEALTHAPP = [
    T("onStandStepChanged ${int}"),
    T("onExtend:${int} ${int:0:99} ${int:0:9} ${int:0:9}"),
    T("getTodayTotalDetailSteps = ${int}##${int}##${int}##${int}##${int}##${int}"),
    T("REPORT : ${int} ${int} ${int} ${int}"),
    T("setTodayTotalDetailSteps=${int}##${int}##${int}##${int}##${int}##${int}"),
    T("flush sensor data"),
    T("calculateCaloriesWithCache totalCalories=${int}"),
    T(
        "processHandleBroadcastAction action:android.intent.action.${choice:SCREEN_ON|SCREEN_OFF|TIME_TICK|USER_PRESENT}"
    ),
    T("calculateAltitudeWithCache totalAltitude=${int}"),
    T("upLoadOneMinuteDataToEngine time:${int}"),
    T("onReceive action: android.intent.action.${choice:SCREEN_ON|SCREEN_OFF|TIME_TICK}"),
    T("getTotalAltitude=${int}"),
    T("setGoalNotifiShown= ${bool}"),
    T(
        "insertHiHealthData() bulkSaveDetailHiHealthData fail errorCode = ${int:1:9}:errorMsg = ${choice:Service Unavailable|Unknown error}",
        rare=2,
    ),
    T("ReportTTLogger report: totalSteps=${int}"),
    T("saveHiHealthData() no steps need save", rare=1),
    T("screen status unknown,think screen on"),
    T("registerSensorListener success, sensor type: ${int:1:40}"),
    T("unRegisterSensorListener success, sensor type: ${int:1:40}"),
    T("checkCurrentDay a new day comes , reset basicStepsData , today is ${int:20170101:20171231}"),
]

# Written for issue 17: slots whose value changes shape (one address or a list, a size with or without
# its size in other units), word slots that are the event in some statements and a parameter in others,
# and outcomes in OpenTelemetry attributes or in the text (a 404 and a 503 are two faults).
_PROFILE, _ORDERS2, _RESERVE, _DBW, _PAY, _CATALOG, _HOOKS, _KAFKA, _DEPLOY = (
    "GET /api/profile",
    "POST /api/orders",
    "inventory.Inventory/Reserve",
    "INSERT orders",
    "POST /api/payments",
    "client.fetch_catalog",
    "worker.deliver_webhook",
    "kafka.produce",
    "deploy.controller",
)


def _http(code: int, name: str = "http.response.status_code") -> tuple[tuple[str, Any], ...]:
    return ((name, code),)


SERVICE_MESH = [
    T("upstream request to ${addrs} failed", _PROFILE, attrs=_http(502)),
    T("upstream request to ${addrs} failed", _PROFILE, attrs=_http(504)),
    T("upstream request to ${addrs} failed", _PROFILE, attrs=_http(503), rare=2),
    T("profile ${uid} could not be loaded", _PROFILE, "ProfileError", attrs=_http(404)),
    T("profile ${uid} could not be loaded", _PROFILE, "ProfileError", attrs=_http(500)),
    T("order ${uuid} rejected by rate limiter", _ORDERS2, attrs=_http(429, "http.status_code")),
    T("order ${uuid} rejected: payload of ${bytes} exceeds the limit", _ORDERS2, attrs=_http(413, "http.status_code")),
    T("reserve ${int:1:9} x sku-${alnum:8} failed", _RESERVE, "grpc.RpcError", attrs=(("rpc.grpc.status_code", 14),)),
    T("reserve ${int:1:9} x sku-${alnum:8} failed", _RESERVE, "grpc.RpcError", attrs=(("rpc.grpc.status_code", 4),)),
    T("reserve ${int:1:9} x sku-${alnum:8} failed", _RESERVE, "grpc.RpcError", attrs=(("rpc.grpc.status_code", 9),)),
    T(
        "could not execute statement on ${addrs}",
        _DBW,
        "psycopg.DatabaseError",
        attrs=(("db.response.status_code", "23505"),),
    ),
    T(
        "could not execute statement on ${addrs}",
        _DBW,
        "psycopg.DatabaseError",
        attrs=(("db.response.status_code", "40001"),),
    ),
    T(
        "could not execute statement on ${addrs}",
        _DBW,
        "psycopg.DatabaseError",
        attrs=(("db.response.status_code", "57014"),),
        rare=1,
    ),
    T("charge ${alnum:24} failed after ${int:1:5} attempts", _PAY, attrs=(("error.type", "timeout"),)),
    T("charge ${alnum:24} failed after ${int:1:5} attempts", _PAY, attrs=(("error.type", "connection_refused"),)),
    T("catalog fetch from ${url} failed: status 404", _CATALOG),
    T("catalog fetch from ${url} failed: status 503", _CATALOG),
    T("catalog fetch from ${url} failed: HTTP 401 Unauthorized", _CATALOG, rare=2),
    T("webhook ${uuid} to ${url} rejected, code=410", _HOOKS),
    T("webhook ${uuid} to ${url} rejected, code=500", _HOOKS),
    T("failed to connect to any of ${iplist} on port 9092", _KAFKA, "KafkaConnectionError"),
    T("message of ${bytes} to topic ${choice:orders|payments|audit|emails} dropped: broker queue full", _KAFKA),
    T("cache ${choice:profile|session|cart|catalog|pricing} unavailable, serving from origin", _PROFILE),
    T("deployment ${choice:api|worker|web} rollout paused", _DEPLOY),
    T("deployment ${choice:api|worker|web} rollout resumed", _DEPLOY),
    T("deployment ${choice:api|worker|web} rollout started", _DEPLOY),
    T("pod ${pod} evicted: memory usage ${mem} over its limit", _DEPLOY),
]

_V = "${choice:RUNNING|SHUTDOWN|PAUSED|SUSPENDED|DELETED|BUILDING}"
CLOUD_LIFECYCLE = [
    T("Lifecycle event Started for instance ${uuid}"),
    T("Lifecycle event Stopped for instance ${uuid}"),
    T("Lifecycle event Paused for instance ${uuid}"),
    T("Lifecycle event Resumed for instance ${uuid}", rare=2),
    T("Volume ${uuid} attached to instance ${uuid}"),
    T("Volume ${uuid} detached from instance ${uuid}"),
    T("Started container ${choice:app|sidecar|init-db|metrics} in pod ${pod}"),
    T("Killing container ${choice:app|sidecar|init-db|metrics} in pod ${pod}"),
    T("Deleting ${choice:volume|snapshot|port|floating-ip|security-group} ${uuid}"),
    T("Task ${uuid} transitioned from " + _V + " to " + _V),
    T("Instance ${uuid} power state " + _V + " does not match database power state " + _V),
    T("Node ${node} is up"),
    T("Node ${node} is down"),
    T("Instances ${uuidlist} have been in ERROR state for over ${int:5:60} minutes"),
    T("Allocated ${mem} for instance ${uuid}"),
    T("Rescheduling instance ${uuid} away from hosts ${hostlist}"),
    T("Image ${uuid} downloaded: ${bytes} in ${dur}"),
    T("Hypervisor ${node} reports ${int:1:64} vCPUs and ${mem} RAM"),
    T(
        "Quota exceeded for ${choice:cores|ram|instances|floating_ips}: requested ${int:1:9}, used ${int:1:99} of ${int:100:200}"
    ),
    T("Port ${uuid} binding failed on host ${node}"),
    T("Failed to reach placement API at ${addrs}, retrying in ${int:1:30}s", rare=2),
    T("Evacuating instances ${uuidlist} from ${node}", rare=1),
]

_UPSTREAM = "${choice:app|auth|search|media}"
EDGE_PROXY = [
    T("connect() to ${iplist:, } failed (111: Connection refused) while connecting to upstream, client: ${ip}"),
    T("upstream timed out (110: Connection timed out) while reading response header from upstream, client: ${ip}"),
    T("client ${ip} closed keepalive connection"),
    T("backend " + _UPSTREAM + "/${node} is DOWN, reason: Layer4 timeout, check duration: ${int:1000:3000}ms"),
    T("backend " + _UPSTREAM + "/${node} is UP, reason: Layer7 check passed, check duration: ${int:1:90}ms"),
    T("Proxy " + _UPSTREAM + " started."),
    T("Proxy " + _UPSTREAM + " stopped (cumulated conns: FE: ${int}, BE: ${int})."),
    T("SSL handshake with ${addrs} failed: certificate verify failed"),
    T("sent ${bytes} to ${ip}:${port} in ${dur}"),
    T("health check of ${hostlist} returned status 503"),
    T("health check of ${hostlist} returned status 500"),
    T("HTTP 429 from ${url}, backing off"),
    T("HTTP 502 from ${url}, backing off"),
    T("worker process ${int} exited on signal ${int:9:15}"),
    T('limiting requests, excess: ${f1} by zone "${choice:api|login|search}", client: ${ip}'),
    T('open() "${path}" failed (2: No such file or directory), client: ${ip}'),
    T("resolver ${iplist: } did not respond within ${dur}"),
    T("upstream response of ${bytes} is buffered to a temporary file ${path}"),
    T("${int} worker connections are not enough", rare=2),
    T("no live upstreams while connecting to upstream " + _UPSTREAM, rare=1),
]

STORAGE_CLUSTER = [
    T("osd.${int:0:120} marked down after no beacon for ${int:900:1200} seconds"),
    T("osd.${int:0:120} booted"),
    T("osd.${int:0:120} stopped"),
    T("osd.${int:0:120} restarted"),
    T(
        "pg ${int:1:30}.${hex:2} is stuck inactive for ${int} seconds, current state ${choice:peering|activating|remapped|backfilling}, last acting [${osds}]"
    ),
    T("Health check failed: ${int:1:9} osds down (OSD_DOWN)"),
    T("${int:2:200} slow requests are blocked > ${int:32:4096} sec, osds ${osds} have slow requests"),
    T("client.${int} write of ${bytes} to rbd_data.${hex:12} timed out"),
    T("Removing ${choice:object|snapshot|clone} ${hex:16} from pool ${word}"),
    T("heartbeat_check: no reply from ${iplist} osd.${int:0:120} since back ${ts}"),
    T("pool '${word}' is full (reached quota's max_bytes: ${mem})"),
    T("pool '${word}' is nearfull"),
    T("recovery ${mem}/s, ${int} objects/s, ${int:1:99} objects degraded"),
    T("deep-scrub ${int:1:30}.${hex:2} found ${int:1:9} errors"),
    T("mon.${choice:a|b|c} calling monitor election"),
    T("mon.${choice:a|b|c} lost quorum, ${int:1:2} of 3 monitors up", rare=2),
    T("mgr module ${choice:balancer|dashboard|prometheus|crash} has failed: ${choice:ImportError|KeyError}", rare=2),
    T("bluestore allocation of ${bytes} failed on osd.${int:0:120}: no space left on device"),
    T("slow operation observed for _txc_committed_kv, latency = ${f1}s, txc = ${hex:12}"),
    T("Cluster is now healthy"),
]

CORPORA: dict[str, list[Template]] = {
    "web_api": WEB_API,
    "agent_tools": AGENT_TOOLS,
    "jvm_pipeline": JVM_PIPELINE,
    "hdfs_like": HDFS,
    "hadoop_spark_like": HADOOP_SPARK,
    "openssh_linux_like": OPENSSH_LINUX,
    "android_like": ANDROID,
    "windows_cbs_like": WINDOWS_CBS,
    "bgl_hpc_like": BGL_HPC,
    "zookeeper_like": ZOOKEEPER,
    "apache_proxifier_like": APACHE_PROXIFIER,
    "openstack_like": OPENSTACK,
    "thunderbird_like": THUNDERBIRD,
    "mac_like": MAC,
    "healthapp_like": HEALTHAPP,
    "service_mesh": SERVICE_MESH,
    "cloud_lifecycle_like": CLOUD_LIFECYCLE,
    "edge_proxy_like": EDGE_PROXY,
    "storage_cluster_like": STORAGE_CLUSTER,
}
