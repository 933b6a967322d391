"""The response cache: SQLite, keyed by model identity + task + sample id + request content +
generation settings.

Image content enters the key through a hash of each image file's bytes, so moving a data
set does not invalidate the cache while editing an image does. Each batch is committed as
it finishes (WAL mode), so an interrupted run resumes without redoing finished samples,
whatever the batch size or the number of processes that wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from cxbench.schema import Request, Response

_IMAGE_HASHES: dict[tuple[str, int, int], str] = {}
_CHECKED: set[tuple[str, int]] = set()  # cache files that passed check_cache_file in this process


def image_hash(path: str) -> str:
    """sha256 of an image file's bytes, memoised on (path, mtime, size)."""
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    digest = _IMAGE_HASHES.get(key)
    if digest is None:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        _IMAGE_HASHES[key] = digest
    return digest


def request_key(model_identity: str, request: Request) -> str:
    """Cache key of one request for one model; image paths are replaced by content hashes."""
    messages = []
    for message in request.messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [
                {"type": "image", "sha256": image_hash(p["path"])} if p.get("type") == "image" else p
                for p in content
            ]
        messages.append({"role": message["role"], "content": content})
    payload = {
        "model": model_identity,
        # two samples with identical content still get their own entries: a sampled or seeded
        # model may answer them differently, and results must not depend on the cache state
        "task": request.task,
        "sample_id": request.sample_id,
        "messages": messages,
        "generation": request.generation,
        # structured fields are part of what baselines see, so part of the key
        "family": request.family,
        "choices": request.choices,
        "query": request.query,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class CacheError(RuntimeError):
    pass


#: the first 16 bytes of every SQLite 3 database file
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _corrupt_message(path: Path, problem: str) -> str:
    return (
        f"response cache {path} is corrupt or not a cxbench cache ({problem}). "
        f"Run `cxbench cache repair {path}` to move it aside (renamed *.corrupt-<date>) and rebuild "
        "a fresh cache from its readable answers, or pass --no-cache (or --cache OTHER_FILE)"
    )


def check_cache_file(path: str | Path) -> str | None:
    """None if ``path`` is absent, empty or a healthy cache database, else what is wrong with it.

    Checks the SQLite header, that the file is as long as its header says (a truncated copy is
    caught even when the lost pages are never read), SQLite's ``quick_check`` of every page,
    and the ``responses`` table's columns. Opens the file read-only; changes nothing.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None  # SQLite treats an empty file as an empty database
    with path.open("rb") as handle:
        head = handle.read(100)
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        return "not an SQLite database (bad header)"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    # the in-header page count is valid when the "version-valid-for" number matches the change counter
    if head[24:28] == head[92:96] and pages and pages * page_size > size:
        return f"truncated: the header declares {pages * page_size} bytes, the file has {size}"
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            return "SQLite quick_check: " + "; ".join(str(r[0]) for r in rows[:3])
        columns = [r[1] for r in db.execute("PRAGMA table_info(responses)")]
        if columns and columns != ["key", "model", "response"]:
            return f"its 'responses' table has columns {columns}, expected ['key', 'model', 'response']"
    except sqlite3.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        db.close()
    return None


def repair_cache(path: str | Path) -> tuple[Path | None, int, int]:
    """Quarantine a broken cache file and rebuild ``path`` from the rows that can still be read.

    The file (with its ``-wal``/``-shm`` companions) is renamed ``PATH.corrupt-<UTC date>``, never
    deleted; readable ``responses`` rows whose JSON parses are copied into a fresh database at
    ``path``. Returns (quarantine path, rows copied, rows lost); (None, 0, 0) if the cache was
    healthy (nothing is changed then).
    """
    import time

    path = Path(path)
    if check_cache_file(path) is None:
        return None, 0, 0
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    quarantine = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while quarantine.exists():
        n += 1
        quarantine = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, quarantine.with_name(quarantine.name + suffix))
    os.replace(path, quarantine)
    rows, lost = _salvage(quarantine)
    fresh = ResponseCache(path)
    try:
        for start in range(0, len(rows), 1000):
            with fresh._db:
                fresh._db.executemany(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows[start : start + 1000]
                )
    finally:
        fresh.close()
    return quarantine, len(rows), lost


def _salvage(path: Path) -> tuple[list[tuple[str, str, str]], int]:
    """Readable (key, model, response) rows of a damaged cache, in rowid order; and a count of bad ones."""
    rows: list[tuple[str, str, str]] = []
    lost = 0
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows, 0
    try:
        db.execute("SELECT 1 FROM responses LIMIT 1").fetchall()
    except sqlite3.Error:
        db.close()
        return rows, 0  # no readable table at all

    def chunk_after(rowid: int) -> list | None:
        try:
            return db.execute(
                "SELECT rowid, key, model, response FROM responses WHERE rowid > ? ORDER BY rowid LIMIT 500",
                (rowid,),
            ).fetchall()
        except sqlite3.Error:
            return None

    last = 0
    try:
        while True:
            chunk = chunk_after(last)
            if chunk is None:  # a damaged page after ``last``: find the first rowid past it
                step, bad = 1, last
                while (chunk := chunk_after(bad + step)) is None and step < 1 << 62:
                    step *= 2
                if chunk is None:
                    break
                good = bad + step  # reading after ``bad`` fails, after ``good`` works: bisect
                while good - bad > 1:
                    middle = (bad + good) // 2
                    if chunk_after(middle) is None:
                        bad = middle
                    else:
                        good = middle
                chunk = chunk_after(good) or []
            if not chunk:
                break
            for rowid, key, model, blob in chunk:
                last = rowid
                try:
                    Response(**json.loads(blob))
                except (TypeError, ValueError):
                    lost += 1
                    continue
                rows.append((key, model, blob))
    finally:
        db.close()
    return rows, lost


class ResponseCache:
    """A SQLite table of responses; safe for several processes writing at once.

    A damaged file is detected when the cache is opened (see :func:`check_cache_file`) and when
    a read or write fails: :class:`CacheError` names the file and the way on.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        checked = (str(self.path.resolve()), os.getpid())
        if checked not in _CHECKED:  # once per process: later damage shows up as a failed read/write
            problem = check_cache_file(self.path)
            if problem is not None:
                raise CacheError(_corrupt_message(self.path, problem))
            _CHECKED.add(checked)
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, response TEXT)"
            )
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise CacheError(_corrupt_message(self.path, str(exc))) from None

    def get_many(self, keys: list[str]) -> dict[str, Response]:
        found: dict[str, Response] = {}
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, response FROM responses WHERE key IN ({marks})"
                for key, blob in self._db.execute(query, chunk):
                    found[key] = Response(**json.loads(blob))
        except sqlite3.DatabaseError as exc:
            raise CacheError(_corrupt_message(self.path, f"reading failed: {exc}")) from None
        except (TypeError, ValueError) as exc:
            raise CacheError(_corrupt_message(self.path, f"a stored answer is unreadable: {exc}")) from None
        return found

    def put_many(self, items: list[tuple[str, str, Response]]) -> None:
        """Store (key, model identity, response) rows and commit."""
        rows = [(key, model, json.dumps(response.to_dict())) for key, model, response in items]
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise CacheError(
                    f"response cache {self.path} stayed locked by another process for 60 s ({exc})"
                ) from None
            raise CacheError(_corrupt_message(self.path, f"writing failed: {exc}")) from None

    def close(self) -> None:
        self._db.close()
