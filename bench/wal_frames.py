"""Which b-trees a SQLite store's write-ahead log frames belong to: where a commit's bytes go.

A commit in WAL mode appends every page it changed to the `-wal` file, once per commit however few rows changed
it, and the checkpoint copies them back. `frames_by_btree` reads the frames of the log's current cycle (those since
the last checkpoint reset it: the header's salts match), counts the commits among them, and names the table or
index that owns each page now (SQLite's `dbstat` table). It must run while the store is still open: closing the
last connection checkpoints the log and deletes it.

Used by `write_growth.py --wal-frames`.
"""

from __future__ import annotations

import sqlite3
import struct
from collections import Counter
from pathlib import Path
from typing import Any

_HEADER = struct.Struct(">IIIIIIII")  # magic, version, page size, checkpoint seq, salt-1, salt-2, checksum 1 and 2
_FRAME = struct.Struct(">IIII")  # page number, database size after commit (0 unless a commit's last frame), salts


def cycle(db: Path) -> tuple[int, int, int] | None:
    """The log's current cycle: (checkpoint sequence, salt-1, salt-2) from its header; None without a log."""
    try:
        with open(db.with_name(db.name + "-wal"), "rb") as f:
            header = f.read(_HEADER.size)
    except FileNotFoundError:
        return None
    if len(header) < _HEADER.size:
        return None
    _magic, _version, _page_size, seq, salt1, salt2, _c1, _c2 = _HEADER.unpack(header)
    return seq, salt1, salt2


def frames_by_btree(db: Path) -> dict[str, Any]:
    """The current log cycle of `db`: its frames and commits, and the frames of each b-tree per commit."""
    wal = db.with_name(db.name + "-wal")
    data = wal.read_bytes() if wal.exists() else b""
    pages: list[int] = []
    commits = 0
    if len(data) >= _HEADER.size:
        _magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = _HEADER.unpack_from(data)
        offset = _HEADER.size
        while offset + 24 + page_size <= len(data):
            page, commit_size, s1, s2 = _FRAME.unpack_from(data, offset)
            if (s1, s2) != (salt1, salt2):  # frames of an earlier cycle, not yet overwritten
                break
            pages.append(page)
            commits += commit_size != 0
            offset += 24 + page_size
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        owner = dict(con.execute("SELECT pageno, name FROM dbstat"))
    counted = Counter(owner.get(page, "(free)") for page in pages)
    per_commit = max(commits, 1)
    return {
        "frames": len(pages),
        "commits": commits,
        "frames_per_commit": round(len(pages) / per_commit, 1),
        "by_btree_per_commit": {name: round(n / per_commit, 1) for name, n in counted.most_common()},
    }
