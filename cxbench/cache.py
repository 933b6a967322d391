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


class ResponseCache:
    """A SQLite table of responses; safe for several processes writing at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, response TEXT)"
            )
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise CacheError(
                f"response cache {self.path} is not a usable SQLite database ({exc}); "
                "move it aside or delete it to start a fresh cache, or pass --no-cache"
            ) from None

    def get_many(self, keys: list[str]) -> dict[str, Response]:
        found: dict[str, Response] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, response FROM responses WHERE key IN ({marks})"
            for key, blob in self._db.execute(query, chunk):
                found[key] = Response(**json.loads(blob))
        return found

    def put_many(self, items: list[tuple[str, str, Response]]) -> None:
        """Store (key, model identity, response) rows and commit."""
        rows = [(key, model, json.dumps(response.to_dict())) for key, model, response in items]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()
