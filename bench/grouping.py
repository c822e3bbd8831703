"""Grouping quality: how well error records become one issue per fault (docs/benchmarks.md).

    python bench/grouping.py [--seed 7] [--total 3000] [--no-drain] [--corpus NAME ...]
    python bench/grouping.py --signature    # only record_signature's throughput

Runs the full pipeline on every labelled corpus of `bench/corpora.py`, exactly as LoopKit does it:
at ingest each record (with its attributes) goes through the real `record_signature` hook (operation,
exception type, masked message prefixed by outcome attributes such as `[http 404]`); at diagnosis the
distinct templates of each (operation, exception type) and outcome are clustered with
`loopkit_plugins.templates.cluster`, with each template's record count. Prints one JSON document with,
per corpus and as a mean:

- GA, grouping accuracy: the share of records whose predicted group has exactly the member set of
  their true fault;
- FGA: F1 over groups, a predicted group counting when it matches a true group exactly;
- issues: groups reported, against the true number of faults;

for LoopKit and two baselines: "mask then hash exact" (the signature alone) and, when the `drain3`
package is installed (for the comparison only; `pip install drain3`), drain3 with its default
settings on the raw messages, one miner per (operation, exception type). Also the masking
throughput (messages per CPU second on one core, median of five passes over every corpus's
messages and over those of 80-200 characters, memos cleared before each pass; `--signature`: the
same for `record_signature`, mask and hash, over `Record` objects) and the CPU time to cluster 10,000
distinct templates. `identity_kept` checks stability across two windows (see `identity_kept`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

import corpora  # bench/ is on sys.path when this file runs as a script

from loopkit_core.model import Record
from loopkit_plugins import masking, signature_clusterer, templates

Grouper = Callable[[Sequence[corpora.Record]], list[object]]


def scores(truth: Sequence[int], predicted: Sequence[object]) -> dict[str, float | int]:
    """GA, FGA and group counts of one predicted grouping against the true one."""
    true_sets: dict[int, set[int]] = defaultdict(set)
    pred_sets: dict[object, set[int]] = defaultdict(set)
    for i, (t, p) in enumerate(zip(truth, predicted, strict=True)):
        true_sets[t].add(i)
        pred_sets[p].add(i)
    true_frozen = {frozenset(s) for s in true_sets.values()}
    exact = [s for s in pred_sets.values() if frozenset(s) in true_frozen]
    ga = sum(len(s) for s in exact) / len(truth)
    precision = len(exact) / len(pred_sets)
    recall = len(exact) / len(true_sets)
    fga = 0.0 if not exact else 2 * precision * recall / (precision + recall)
    return {"GA": round(ga, 4), "FGA": round(fga, 4), "issues": len(pred_sets), "faults": len(true_sets)}


def as_record(r: corpora.Record, i: int = 0) -> Record:
    """The corpus record as LoopKit's record model: an error with its operation, exception and attributes."""
    return Record(
        record_id=f"rec_{i:024x}",
        ts_ns=1_700_000_000_000_000_000 + i,
        end_ns=1_700_000_000_000_000_000 + i,
        type="error",
        name=r.operation,
        service="bench",
        status="error",
        message=r.message,
        # As the receivers do (`signals.py`): without exception.type, error.type is the exception type.
        exception_type=r.exception_type or r.attributes.get("error.type") or None,
        attributes=r.attributes,
    )


def signature(r: corpora.Record) -> tuple[str, str, str]:
    """(operation, exception type, template) of a record, from the real `record_signature` hook."""
    record = as_record(r)
    return (r.operation, record.exception_type or "", signature_clusterer.record_signature(record).template)


def group_exact(records: Sequence[corpora.Record]) -> list[object]:
    """Baseline: the ingest signature alone (mask, then hash exactly)."""
    return [signature(r) for r in records]


def cluster_signatures(signatures: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], object]:
    """Each distinct signature's group, as the diagnosis makes them: per partition and status, with counts."""
    counts = Counter(signatures)
    by_key: dict[tuple[str, str, str], list[tuple[str, str, int]]] = defaultdict(list)
    for (op, exc, tpl), n in counts.items():
        status, body = signature_clusterer.split_status(tpl)
        by_key[(op, exc, status)].append((tpl, body, n))
    group_of: dict[tuple[str, str, str], object] = {}
    for key, rows in by_key.items():
        labels = templates.cluster([body for _, body, _ in rows], counts=[n for _, _, n in rows])
        for (tpl, _, _), gid in zip(rows, labels, strict=True):
            group_of[(key[0], key[1], tpl)] = (*key, gid)
    return group_of


def group_loopkit(records: Sequence[corpora.Record]) -> list[object]:
    """LoopKit: the ingest signature, then `cluster` over the distinct templates of each key."""
    signatures = group_exact(records)
    group_of = cluster_signatures(signatures)  # type: ignore[arg-type]
    return [group_of[s] for s in signatures]  # type: ignore[index]


def identity_kept(records: Sequence[corpora.Record]) -> float:
    """Share of second-half records that land with the right known issue (or, for a new fault, none).

    The first half of the records is one diagnosis window: its groups become issues titled with
    `generalize`. The second half is the next window, clustered together with those titles (which
    carry no records of it), as the diagnosis does; a record keeps its identity when its group holds
    exactly one known title and that title's issue is its own fault (by majority), or holds none when
    its fault is new.
    """
    half = len(records) // 2
    first, second = records[:half], records[half:]
    sig1 = [signature(r) for r in first]
    group_of = cluster_signatures(sig1)
    members: dict[object, list[int]] = defaultdict(list)
    for i, s in enumerate(sig1):
        members[group_of[s]].append(i)
    titles: dict[tuple[str, str, str], list[tuple[str, int]]] = defaultdict(list)
    for key, idx in members.items():
        faults = Counter(first[i].fault for i in idx)
        title = templates.generalize([signature_clusterer.split_status(sig1[i][2])[1] for i in idx])
        titles[key[:3]].append((title, faults.most_common(1)[0][0]))  # type: ignore[index]
    known_faults = {r.fault for r in first}
    sig2 = [signature(r) for r in second]
    counts = Counter(sig2)
    by_key: dict[tuple[str, str, str], list[tuple[str, str, int]]] = defaultdict(list)
    for (op, exc, tpl), n in counts.items():
        status, body = signature_clusterer.split_status(tpl)
        by_key[(op, exc, status)].append((tpl, body, n))
    owners_of: dict[tuple[str, str, str], list[int]] = {}
    for key, rows in by_key.items():
        known = titles.get(key, [])
        ids = templates.cluster(
            [t for t, _ in known] + [body for _, body, _ in rows], counts=[0] * len(known) + [n for _, _, n in rows]
        )
        title_faults: dict[int, list[int]] = defaultdict(list)
        for (_, fault), g in zip(known, ids, strict=False):
            title_faults[g].append(fault)
        for (tpl, _, _), g in zip(rows, ids[len(known) :], strict=True):
            owners_of[(key[0], key[1], tpl)] = title_faults.get(g, [])
    kept = 0
    for r, s in zip(second, sig2, strict=True):
        owners = owners_of[s]
        if owners == [r.fault] or (not owners and r.fault not in known_faults):
            kept += 1
    return round(kept / len(second), 4)


def group_drain3(records: Sequence[corpora.Record]) -> list[object]:
    """Baseline: drain3's TemplateMiner with default settings, one miner per (operation, exception)."""
    from drain3 import TemplateMiner  # type: ignore[import-not-found]
    from drain3.template_miner_config import TemplateMinerConfig  # type: ignore[import-not-found]

    miners: dict[tuple[str, str], TemplateMiner] = {}
    results = []
    for r in records:
        key = (r.operation, r.exception_type)
        # An explicit default config: without one drain3 looks for a drain3.ini and says so.
        miner = miners.get(key) or miners.setdefault(key, TemplateMiner(config=TemplateMinerConfig()))
        results.append((key, miner.add_log_message(r.message)["cluster_id"]))
    return results


def drain3_available() -> bool:
    """True when the optional `drain3` package can be imported."""
    try:
        import drain3  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def clear_memos() -> None:
    """Forget the masking's and the signature's memos, so that a pass measures the work itself."""
    masking._memo.clear()
    masking._fault_memo.clear()
    masking._key_kinds.clear()
    signature_clusterer._signatures.clear()


def masking_throughput(messages: Sequence[str], passes: int = 5) -> float:
    """Messages per CPU second through `mask`, median of several passes with the memo cleared.

    CPU time of this process, not wall time: on a shared, busy machine wall time mostly measures
    the wait for a core.
    """
    rates = []
    for _ in range(passes):
        clear_memos()
        start = time.process_time()
        for m in messages:
            masking.mask(m)
        rates.append(len(messages) / (time.process_time() - start))
    clear_memos()
    return statistics.median(rates)


def signature_throughput(records: Sequence[Record], passes: int = 5) -> float:
    """Records per CPU second through `record_signature` (mask + hash), median of passes, memos cleared."""
    rates = []
    for _ in range(passes):
        clear_memos()
        start = time.process_time()
        for r in records:
            signature_clusterer.record_signature(r)
        rates.append(len(records) / (time.process_time() - start))
    clear_memos()
    return statistics.median(rates)


def signature_report(seed: int, total: int) -> dict[str, object]:
    """`record_signature` throughput over every corpus's records and over those of 80-200 characters."""
    records = [as_record(r, i) for rs in corpora.build_all(seed, total).values() for i, r in enumerate(rs)]
    typical = [r for r in records if 80 <= len(r.message) <= 200]
    distinct = len({r.message for r in typical}) / len(typical)
    return {
        "records": len(records),
        "records_per_cpu_second": round(signature_throughput(records)),
        "typical_80_200_chars": {
            "records": len(typical),
            "distinct_messages": round(distinct, 3),
            "with_attributes": sum(bool(r.attributes) for r in typical),
            "records_per_cpu_second": round(signature_throughput(typical)),
        },
    }


def clustering_time(n: int = 10_000, seed: int = 7) -> dict[str, float | int]:
    """Seconds to cluster `n` distinct templates (all corpora's distinct templates, widened with word variants)."""
    pool: list[str] = []
    for records in corpora.build_all(seed, 6000).values():
        pool.extend(dict.fromkeys(masking.mask(r.message) for r in records))
    distinct = list(dict.fromkeys(pool))
    extra = 0
    while len(distinct) < n:
        # More distinct templates: the same messages with an unmasked plain-word value appended.
        distinct.append(f"{pool[extra % len(pool)]} via relay{chr(97 + extra % 26)}{chr(97 + extra // 26 % 26)}")
        extra += 1
    distinct = distinct[:n]
    start = time.process_time()
    groups = templates.cluster(distinct)
    return {"templates": n, "groups": len(set(groups)), "cpu_seconds": round(time.process_time() - start, 3)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run every corpus, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--total", type=int, default=3000, help="records per corpus")
    parser.add_argument("--no-drain", action="store_true", help="skip the drain3 baseline")
    parser.add_argument("--corpus", action="append", help="only these corpora (repeatable)")
    parser.add_argument("--signature", action="store_true", help="only time record_signature (records/CPU s)")
    args = parser.parse_args(argv)
    if args.signature:
        print(json.dumps(signature_report(args.seed, args.total), indent=2))
        return 0

    methods: dict[str, Grouper] = {"loopkit": group_loopkit, "mask_exact": group_exact}
    if not args.no_drain and drain3_available():
        methods["drain3_default"] = group_drain3

    names = args.corpus or list(corpora.CORPORA)
    report: dict[str, object] = {"seed": args.seed, "records_per_corpus": args.total, "corpora": {}}
    per_method: dict[str, list[dict[str, float | int]]] = defaultdict(list)
    all_messages: list[str] = []
    for name in names:
        records = corpora.build(name, args.seed, args.total)
        all_messages.extend(r.message for r in records)
        truth = [r.fault for r in records]
        row: dict[str, object] = {"records": len(records)}
        for method, grouper in methods.items():
            clear_memos()
            start = time.perf_counter()
            predicted = grouper(records)
            result = scores(truth, predicted) | {"seconds": round(time.perf_counter() - start, 3)}
            row[method] = result
            per_method[method].append(result)
        row["identity_kept"] = identity_kept(records)
        report["corpora"][name] = row  # type: ignore[index]
    report["mean"] = {
        method: {
            "GA": round(statistics.fmean(r["GA"] for r in rows), 4),
            "FGA": round(statistics.fmean(r["FGA"] for r in rows), 4),
            "issues": sum(int(r["issues"]) for r in rows),
            "faults": sum(int(r["faults"]) for r in rows),
        }
        for method, rows in per_method.items()
    }
    report["mean"]["identity_kept"] = round(  # type: ignore[index]
        statistics.fmean(row["identity_kept"] for row in report["corpora"].values()),  # type: ignore[attr-defined]
        4,
    )
    lengths = [len(m) for m in all_messages]
    typical = [m for m in all_messages if 80 <= len(m) <= 200]
    report["masking"] = {
        "messages": len(all_messages),
        "mean_chars": round(statistics.fmean(lengths), 1),
        "messages_per_cpu_second": round(masking_throughput(all_messages)),
        "typical_80_200_chars": {
            "messages": len(typical),
            "mean_chars": round(statistics.fmean(len(m) for m in typical), 1),
            "messages_per_cpu_second": round(masking_throughput(typical)),
        },
    }
    report["clustering"] = clustering_time(seed=args.seed)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
