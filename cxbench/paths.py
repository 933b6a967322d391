"""Where cxbench keeps generated data, trained baselines and the response cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of cxbench's user cache: ``$CXBENCH_CACHE`` or ``~/.cache/cxbench``."""
    root = os.environ.get("CXBENCH_CACHE")
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "cxbench"
    path.mkdir(parents=True, exist_ok=True)
    return path
