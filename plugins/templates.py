"""Cluster masked message templates so that one fault is one group and two faults are two.

The masker (`loopkit_plugins.masking`) removes the values it recognises; what it misses are mostly
plain words that vary: user and host names, program names, enum-like states. `cluster` finds them
from the templates themselves, with one fixed configuration:

1. Tokens. A template is split on whitespace, brackets, commas and quotes. Every placeholder
   (``<NUM>``, ``<ID>`` ... and the ``<*>`` of an already generalised template) becomes ``<*>``; a
   token that is only punctuation around placeholders (``/<IP>``, ``(<NUM>)``) becomes ``<*>``; a
   repeated run of the same placeholder-bearing n-gram (lists of IDs) collapses to one.
2. Buckets. Only templates with the same number of tokens are compared (as in Drain), plus one
   cross-length rule at the end (step 6).
3. Anchors. In the spirit of Brain's "longest common pattern": a template's constant words are
   shared by every template of its group, so they have the same, highest document frequency at
   their position; words seen in fewer templates than that frequency are variable candidates.
   Templates with the same constants form a candidate group.
4. Columns. A candidate column is a variable only on evidence: a ``<*>`` in it (the masker saw a
   value there), or `MIN_VALUES` or more distinct words, or only value-shaped words (``chrome.exe``,
   ``com.android.phone``, ``a/b``), or a word that fits a partial value (``ch_KpAuYl`` next to
   ``ch_<*>``). Never variable: words that name a fault (a lexicon shared with the masker:
   ``refused``, ``timed``, ``denied``, ``found``, ``authorized``...; inside identifiers the strong
   ones, ``rate_limit_exceeded``, ``NullPointerException``), HTTP methods, and plain words in first
   position (``Starting`` / ``Stopping``). Two plain words that are the only difference between
   two templates stay apart: with no more evidence, a different word is more likely a different
   fault than a variable. With record counts (`cluster(templates, counts)`), a column of event
   words (``Started`` / ``Stopped`` / ``Paused``; never upper-case enum constants) that form a closed
   set in the window (fewer than half of them seen in one record only) names the event: its values
   stay apart, however many. Where several columns vary, a column stays variable only if it still
   varies inside some part made by the other, splitting columns.
5. Siblings. Groups whose patterns differ at exactly one position are merged by the same column
   rule, repeatedly, until nothing changes; this is what joins a known issue's ``<*>`` template
   with its new concrete variants. No merge may leave a pattern with fewer than a third of its
   words literal: mostly-``<*>`` patterns would absorb unrelated templates.
6. Lengths. Groups whose patterns have the same words once their ``<*>`` (and brackets around a
   lone ``<*>``) are dropped (an empty, multi-word or bracketed value) are merged.

Everything is computed on sets, so the partition does not depend on the input order; group ids are
numbered by first appearance in the input. Cost: about half a second for 10,000 templates.
"""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from loopkit_plugins.masking import collapse, has_fault_word

__all__ = ["MIN_VALUES", "WILDCARD", "cluster", "generalize", "tokens"]

WILDCARD = "<*>"
# Distinct plain words a column must hold before they are taken as values of one variable.
MIN_VALUES = 3
# Records each event word of a column must carry before the column is taken as the event's name.
EVENT_RECORDS = 2
# Words that name a state change or a state without the `-ed` of a past participle.
_EVENT_WORDS = frozenset(
    {
        *("up", "down", "on", "off", "ok", "online", "offline", "ready", "idle", "active", "inactive"),
        *("success", "successful", "complete", "begin", "end", "start", "stop", "open", "close", "pause", "resume"),
    }
)

_TOKEN = re.compile(r"[^\s,;()\[\]{}|\"']+|[,;()\[\]{}|\"']")
_PLACEHOLDER = re.compile(r"<(?:\*|[A-Z][A-Z_]*)>")
_ALNUM = re.compile(r"[A-Za-z0-9]")
# Shapes of values rather than words: file names (`chrome.exe`), dotted package or host names
# (`com.android.phone`), paths and addresses. Method names (`NameSystem.addStoredBlock`,
# `registerSensorListener`) and snake_case words are left to the word rules: they are as often
# the statement's constant as a value.
_VALUE_SHAPE = re.compile(r"\w\.[A-Za-z0-9]{1,4}\W*$|\w\.\w+\.\w|[A-Za-z0-9][/\\@][A-Za-z0-9.]")


# Request methods name different endpoints, hence different faults, however many of them there are.
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def tokens(template: str) -> list[str]:
    """Split a template into tokens: runs without whitespace, brackets, commas or quotes, and those marks."""
    return _TOKEN.findall(template)


def _norm_token(tok: str) -> str:
    if "<" not in tok:
        return tok
    bare = _PLACEHOLDER.sub("", tok)
    if bare == tok:
        return tok
    # `/<IP>`, `<NUM>:`, `*<NUM>`: punctuation around a value is still just a value.
    if not _ALNUM.search(bare):
        return WILDCARD
    return _PLACEHOLDER.sub(WILDCARD, tok)


_OPEN = {"[": "]", "(": ")", "{": "}"}


def _unbracket(toks: Sequence[str]) -> list[str]:
    """`[ <*> ]` is a value: a bracketed list of addresses prints where a single host prints in other lines."""
    out: list[str] = []
    for tok in toks:
        if len(out) >= 2 and out[-1] == WILDCARD and _OPEN.get(out[-2]) == tok:
            del out[-2]
            continue
        out.append(tok)
    return out


def _collapse(toks: list[str]) -> tuple[str, ...]:
    """Collapse a repeated run of a placeholder-bearing n-gram (n <= 3) to one copy: lists of values."""
    if sum(WILDCARD in t for t in toks) < 2:
        return tuple(toks)
    out = list(toks)
    for n in (1, 2, 3):
        i = 0
        res: list[str] = []
        while i < len(out):
            gram = out[i : i + n]
            if len(gram) == n and any(WILDCARD in t for t in gram):
                j = i + n
                while out[j : j + n] == gram:
                    j += n
                res.extend(gram)
                i = j
            else:
                res.append(out[i])
                i += 1
        out = res
    return tuple(out)


def _normalise(template: str) -> tuple[str, ...]:
    # The masker's list and detail rules again: templates stored before them (a known issue's) still join.
    return _collapse([_norm_token(t) for t in tokens(collapse(template))])


@functools.lru_cache(maxsize=65536)
def _is_fault_word(word: str) -> bool:
    return has_fault_word(word)


@functools.lru_cache(maxsize=65536)
def _is_identifier(word: str) -> bool:
    return bool(_VALUE_SHAPE.search(word.replace(WILDCARD, "")))


def _substantive(pattern: tuple[str, ...]) -> bool:
    """A merged pattern must keep a third of its words: mostly-`<*>` patterns absorb unrelated templates."""
    words = [t for t in pattern if t == WILDCARD or _ALNUM.search(t)]
    literals = sum(t != WILDCARD for t in words)
    return literals >= 1 and 3 * literals >= len(words)


def _is_event_word(word: str) -> bool:
    """A word that says what happened (`Started`, `stopped`, `up`), not an enum constant (`RUNNING`)."""
    if len(word) > 1 and word.isupper():
        return False  # enum values print as upper-case names: a state passed as a parameter
    lower = word.lower()
    return lower.isalpha() and ((len(lower) >= 4 and lower.endswith("ed")) or lower in _EVENT_WORDS)


def _event_column(literals: list[str], counts: Counter[str] | None) -> bool:
    """Event words, each carrying many records in the window: the column names the event, not a parameter.

    A closed set of verbs (`VM Started` / `VM Stopped`), each seen often, is the event itself; an open
    set (many values, few records each) is a parameter. Values with no records in the window (a known
    issue's template) are not weighed. Without counts there is no evidence, and the column rule decides.
    """
    if counts is None or len(literals) < 2 or not all(_is_event_word(v) for v in literals):
        return False
    seen = [counts[v] for v in literals if counts[v] > 0]
    if len(seen) < 2:
        return False
    # Good-Turing: the share of values seen once estimates how likely the next record brings a new value.
    # A closed set (fewer than half of its values seen once) is a few events, each logged again and again.
    return 2 * sum(1 for n in seen if n < EVENT_RECORDS) < len(seen)


def _column_classes(values: Iterable[str], first: bool = False, counts: Counter[str] | None = None) -> dict[str, str]:
    """Map each value seen in one column to a class: values in the same class are one variable."""
    distinct = sorted(set(values))
    has_wild = WILDCARD in distinct
    fault = [v for v in distinct if v in _HTTP_METHODS or (v != WILDCARD and _is_fault_word(v.replace(WILDCARD, "")))]
    others = [v for v in distinct if v not in fault]
    literal_others = [v for v in others if v != WILDCARD]
    identifiers = len(literal_others) >= 2 and all(_is_identifier(v) for v in literal_others)
    # A message's first word is its verb or subject (`Starting ...`, `Stopping ...`): only the
    # masker's evidence or identifier shapes (`chrome.exe - ...`) make it a value.
    variable = has_wild or identifiers or (len(literal_others) >= MIN_VALUES and not first)
    if variable and not has_wild and not identifiers and _event_column(literal_others, counts):
        variable = False
    classes = {v: v for v in fault}
    for v in others:
        classes[v] = WILDCARD if variable else v
    if not variable:
        # `ch_<*>` and `ch_KpAuYlXBnipOTSwO`: a value the masker missed still fits a value it caught.
        partial = [v for v in others if WILDCARD in v and v != WILDCARD]
        for v in others:
            if WILDCARD not in v:
                for p in partial:
                    if _glob(p).fullmatch(v):
                        classes[v] = classes[p]
                        break
    return classes


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".+".join(re.escape(part) for part in pattern.split(WILDCARD)))


class _Groups:
    """Union-find over pattern indices; the root's pattern is the group's generalised pattern."""

    def __init__(self, patterns: list[tuple[str, ...]], weights: list[int] | None) -> None:
        self.parent = list(range(len(patterns)))
        self.pattern = list(patterns)
        # Records per group (None without counts): the word-slot rule weighs a column's values by them.
        self.weight = None if weights is None else list(weights)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, members: list[int], pattern: tuple[str, ...]) -> bool:
        roots = sorted({self.find(i) for i in members})
        root = roots[0]
        changed = len(roots) > 1 or self.pattern[root] != pattern
        for r in roots[1:]:
            self.parent[r] = root
            if self.weight is not None:
                self.weight[root] += self.weight[r]
        self.pattern[root] = pattern
        return changed


def _anchor_groups(
    patterns: list[tuple[str, ...]], weights: list[int] | None
) -> list[tuple[list[int], tuple[str, ...]]]:
    """Stage 3-4: group same-length patterns by their high-frequency words, then split fault columns."""
    width = len(patterns[0])
    df = [Counter(p[i] for p in patterns) for i in range(width)]
    candidates: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for idx, pat in enumerate(patterns):
        freqs = [df[i][t] for i, t in enumerate(pat) if t != WILDCARD]
        if freqs:
            count = Counter(freqs)
            anchor = max(count, key=lambda f: (count[f], f))
        else:
            anchor = 0
        sig = tuple(t if t != WILDCARD and df[i][t] >= anchor else WILDCARD for i, t in enumerate(pat))
        candidates[sig].append(idx)
    out: list[tuple[list[int], tuple[str, ...]]] = []
    for sig, members in candidates.items():
        cols = [i for i, t in enumerate(sig) if t == WILDCARD]
        classes = _settle_columns(
            [patterns[m] for m in members], cols, None if weights is None else [weights[m] for m in members]
        )
        parts: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for m in members:
            parts[tuple(classes[i][patterns[m][i]] for i in cols)].append(m)
        for key, part in parts.items():
            pat = list(sig)
            for i, cls in zip(cols, key, strict=True):
                values = {patterns[m][i] for m in part}
                pat[i] = cls if cls != WILDCARD or len(values) > 1 else next(iter(values))
            if len(part) > 1 and not _substantive(tuple(pat)):
                out.extend(([m], patterns[m]) for m in part)
            else:
                out.append((part, tuple(pat)))
    return out


def _value_counts(rows: Iterable[tuple[str, ...]], i: int, weights: Iterable[int] | None) -> Counter[str] | None:
    """Records per value of column `i` (None without counts)."""
    if weights is None:
        return None
    counts: Counter[str] = Counter()
    for r, w in zip(rows, weights, strict=True):
        counts[r[i]] += w
    return counts


def _settle_columns(
    rows: list[tuple[str, ...]], cols: list[int], weights: list[int] | None = None
) -> dict[int, dict[str, str]]:
    """Classes per candidate column, a column staying variable only where the other columns agree.

    `Total disk: ..., used:` and `Total memory: ..., used:` look like one variable column next to
    `memory limit: ..., free:`, until the split by the other columns shows only two words in it.
    A column is kept variable when at least one part made by the splitting columns still shows
    it varying, so a user column stays variable across a `refused` / `timed out` split.
    """
    classes = {i: _column_classes((r[i] for r in rows), i == 0, _value_counts(rows, i, weights)) for i in cols}
    changed = True
    while changed:
        changed = False
        splitting = [i for i in cols if len(set(classes[i].values())) > 1]
        # The part of each row, by its classes in the splitting columns (none of them is checked below).
        keys = [tuple(classes[j][r[j]] for j in splitting) for r in rows]
        for i in cols:
            if i in splitting or not any(c == WILDCARD for c in classes[i].values()):
                continue
            parts: dict[tuple[str, ...], set[str]] = defaultdict(set)
            for key, r in zip(keys, rows, strict=True):
                parts[key].add(r[i])
            evidence = False
            counts = _value_counts(rows, i, weights)
            for values in parts.values():
                local = _column_classes(values, i == 0, counts)
                if sum(1 for v in values if local[v] == WILDCARD) > 1 or (WILDCARD in values and len(values) > 1):
                    evidence = True
                    break
            demoted = {v: (c if c != WILDCARD else v) for v, c in classes[i].items()}
            if not evidence and demoted != classes[i]:
                classes[i] = demoted
                changed = True
    return classes


_MOD = (1 << 61) - 1
_BASE = 1_000_003


def _prefix_hashes(pattern: tuple[str, ...]) -> list[int]:
    """Polynomial prefix hashes: the hash of any slice of the pattern is then O(1)."""
    pre = [0] * (len(pattern) + 1)
    for i, tok in enumerate(pattern):
        pre[i + 1] = (pre[i] * _BASE + hash(tok)) % _MOD
    return pre


def _sibling_sets(pre: dict[int, list[int]], width: int) -> list[tuple[int, list[int]]]:
    """All (position, groups) where the groups' patterns agree everywhere but at that position.

    Two patterns that differ at one position agree on one half of any range around it, so halving
    the range and bucketing by the hash of the other half finds every such set in O(n log width),
    where comparing every pattern without every position would cost O(n width).
    """
    powers = [1] * (width + 1)
    for i in range(width):
        powers[i + 1] = powers[i] * _BASE % _MOD

    def span(r: int, lo: int, hi: int) -> int:
        h = pre[r]
        return (h[hi] - h[lo] * powers[hi - lo]) % _MOD

    found: list[tuple[int, list[int]]] = []
    stack = [(sorted(pre), 0, width)]
    while stack:
        members, lo, hi = stack.pop()
        if hi - lo == 1:
            found.append((lo, members))
            continue
        mid = (lo + hi) // 2
        for keep_lo, keep_hi, rest_lo, rest_hi in ((lo, mid, mid, hi), (mid, hi, lo, mid)):
            buckets: dict[int, list[int]] = defaultdict(list)
            for r in members:
                buckets[span(r, keep_lo, keep_hi)].append(r)
            stack.extend((b, rest_lo, rest_hi) for b in buckets.values() if len(b) > 1)
    return found


def _merge_siblings(groups: _Groups, roots: list[int], width: int) -> None:
    """Stage 5: merge groups whose patterns differ at one position that the column rule calls variable."""
    cache: dict[int, tuple[tuple[str, ...], list[int]]] = {}
    changed = True
    while changed:
        changed = False
        live = sorted({groups.find(r) for r in roots})
        # Groups that ended up with the same pattern are one group.
        same: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for r in live:
            same[groups.pattern[r]].append(r)
        for pat, rs in same.items():
            if len(rs) > 1:
                groups.union(rs, pat)
        pre: dict[int, list[int]] = {}
        for r in sorted({groups.find(r) for r in live}):
            hit = cache.get(r)
            if hit is None or hit[0] is not groups.pattern[r]:
                hit = cache[r] = (groups.pattern[r], _prefix_hashes(groups.pattern[r]))
            pre[r] = hit[1]
        # Candidates come from one snapshot; each is re-checked on the current patterns before it
        # merges, and the loop runs until nothing changes, so the order of merges does not matter.
        for pos, members in sorted(_sibling_sets(pre, width)):
            current: dict[tuple[str, ...], set[int]] = defaultdict(set)
            for r in members:
                root = groups.find(r)
                pat = groups.pattern[root]
                current[pat[:pos] + pat[pos + 1 :]].add(root)
            for rest in current.values():
                if len(rest) > 1:
                    changed |= _merge_at(groups, sorted(rest), pos)


def _merge_at(groups: _Groups, members: list[int], pos: int) -> bool:
    """Merge the groups (identical but at `pos`) whose values at `pos` fall in one class."""
    counts = _value_counts(
        (groups.pattern[r] for r in members),
        pos,
        None if groups.weight is None else [groups.weight[r] for r in members],
    )
    classes = _column_classes((groups.pattern[r][pos] for r in members), pos == 0, counts)
    by_class: dict[str, list[int]] = defaultdict(list)
    for r in members:
        by_class[classes[groups.pattern[r][pos]]].append(r)
    changed = False
    for cls, rs in by_class.items():
        if len(rs) < 2:
            continue
        pat = list(groups.pattern[rs[0]])
        values = {groups.pattern[r][pos] for r in rs}
        pat[pos] = cls if cls != WILDCARD or len(values) > 1 else next(iter(values))
        if _substantive(tuple(pat)):
            changed |= groups.union(rs, tuple(pat))
    return changed


def cluster(templates: Sequence[str], counts: Sequence[int] | None = None) -> list[int]:
    """Return a group index (0..k-1, numbered by first appearance) for each template.

    `counts`, optional, is the number of records of each template in the window (0 for a template with
    none, such as a known issue's); with it a column of event words that each carry many records stays
    apart (`VM Started` / `VM Stopped`) where a column of parameter words would join.
    """
    norm = [_normalise(t) for t in templates]
    distinct = sorted(set(norm))
    index = {p: i for i, p in enumerate(distinct)}
    weights: list[int] | None = None
    if counts is not None:
        if len(counts) != len(templates):
            raise ValueError("counts must have one number per template")
        weights = [0] * len(distinct)
        for p, n in zip(norm, counts, strict=True):
            weights[index[p]] += max(int(n), 0)
    groups = _Groups(distinct, weights)
    by_width: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(distinct):
        by_width[len(p)].append(i)
    for width, ids in sorted(by_width.items()):
        if width == 0:
            groups.union(ids, ())
            continue
        for part, pat in _anchor_groups(
            [distinct[i] for i in ids], None if weights is None else [weights[i] for i in ids]
        ):
            groups.union([ids[j] for j in part], pat)
        _merge_siblings(groups, ids, width)
    # Stage 6: the same words around a value of varying length (empty, several tokens).
    by_words: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for r in sorted({groups.find(i) for i in range(len(distinct))}):
        # A bracketed value (`[ <*> ]`, a list of addresses) is a value too (`<*>`, one host name).
        words = tuple(t for t in _unbracket(groups.pattern[r]) if t != WILDCARD)
        if len(words) >= 2 and len(words) < len(groups.pattern[r]):
            by_words[words].append(r)
    for rs in by_words.values():
        if len(rs) > 1:
            groups.union(rs, groups.pattern[min(rs, key=lambda r: (-len(groups.pattern[r]), groups.pattern[r]))])
    ids: dict[int, int] = {}
    out: list[int] = []
    for p in norm:
        root = groups.find(index[p])
        out.append(ids.setdefault(root, len(ids)))
    return out


def generalize(templates: Sequence[str]) -> str:
    """Merge one group's templates into one: positions where they differ become ``<*>``."""
    if not templates:
        return ""
    rows = sorted({t for t in templates})
    if len(rows) == 1:
        return rows[0]
    split = [_split_keep(t) for t in rows]
    widths = Counter(len(toks) for toks, _ in split)
    width = max(widths, key=lambda w: (widths[w], w))
    same = [s for s in split if len(s[0]) == width]
    base_toks, gaps = same[0]
    out = []
    for i in range(width):
        column = {s[0][i] for s in same}
        out.append(base_toks[i] if len(column) == 1 else WILDCARD)
    text = gaps[0] + "".join(tok + gap for tok, gap in zip(out, gaps[1:], strict=True))
    return re.sub(r"<\*>(?:\s*<\*>)+", WILDCARD, text)


def _split_keep(template: str) -> tuple[list[str], list[str]]:
    """Tokens and the text between them (len(gaps) == len(tokens) + 1), to rebuild a template."""
    toks: list[str] = []
    gaps: list[str] = []
    last = 0
    for m in _TOKEN.finditer(template):
        gaps.append(template[last : m.start()])
        toks.append(m.group())
        last = m.end()
    gaps.append(template[last:])
    return toks, gaps
