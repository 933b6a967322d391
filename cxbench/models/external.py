"""Models whose answers come from elsewhere: a predictions file, or any Python callable."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxbench.models.base import Model, ModelError
from cxbench.schema import Request, Response


class PredictionsModel(Model):
    """Scores answers produced elsewhere: JSONL rows ``{"id": SAMPLE_ID, "output": TEXT}``.

    Rows may carry ``"task"`` to hold several tasks in one file. A sample with no row is
    recorded as an error (scored wrong), never silently skipped.
    """

    def __init__(self, path: str, name: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"predictions file not found: {self.path}")
        self.name = name or f"predictions-{self.path.stem}"
        self._rows: dict[tuple[str | None, str], str] = {}
        from cxbench.data.adapters import DataError
        from cxbench.data.validate import decoded_lines

        first_line: dict[tuple[str | None, str], int] = {}
        try:
            for line_no, line in enumerate(decoded_lines(self.path), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = (row.get("task"), str(row["id"]))
                    output = row["output"]
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    raise ModelError(
                        f"{self.path}:{line_no}: expected a JSON object with 'id' and 'output'"
                    ) from None
                if key in first_line:  # two answers for one sample: which one to score is unknowable
                    raise ModelError(
                        f"{self.path}:{line_no}: a second prediction for sample {key[1]!r}"
                        f"{f' of task {key[0]!r}' if key[0] else ''} (first on line {first_line[key]})"
                    )
                first_line[key] = line_no
                self._rows[key] = "" if output is None else str(output)
        except DataError as exc:  # not UTF-8
            raise ModelError(str(exc)) from None
        self._digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]

    def identity(self) -> str:
        return f"predictions:{self.path.name}:{self._digest}"

    def config(self) -> dict:
        return {"path": str(self.path)}

    def generate(self, requests: list[Request]) -> list[Response]:
        responses = []
        for request in requests:
            text = self._rows.get(
                (request.task, request.sample_id), self._rows.get((None, request.sample_id))
            )
            if text is None:
                responses.append(Response(text="", error=f"no prediction for sample {request.sample_id!r}"))
            else:
                responses.append(Response(text=text))
        return responses


def _load_callable(target: str) -> tuple[Callable[..., Any], str]:
    module_ref, _, function_name = target.rpartition(":")
    if not module_ref or not function_name:
        raise ModelError(f"python model: expected python:module:function, got python:{target}")
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        if not path.is_file():
            raise ModelError(f"python model: file not found: {path}")
        spec = importlib.util.spec_from_file_location(f"cxbench_user_model_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as exc:
            raise ModelError(f"python model: cannot import {module_ref!r}: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ModelError(f"python model: {module_ref} has no callable {function_name!r}")
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        source = ""
    return function, hashlib.sha256(source.encode()).hexdigest()[:16]


class PythonModel(Model):
    """Any callable ``function(request: Request) -> str`` (or a Response).

    The cache identity includes a hash of the callable's module source, so editing the
    function invalidates its cached answers.
    """

    def __init__(self, target: str, name: str | None = None, **kwargs: Any) -> None:
        self.target = target
        self.function, self._digest = _load_callable(target)
        self.kwargs = kwargs
        self.name = name or f"python-{target.rpartition(':')[2]}"

    def identity(self) -> str:
        args = json.dumps(self.kwargs, sort_keys=True)
        return f"python:{self.target}:{self._digest}:{args}"

    def config(self) -> dict:
        return {"target": self.target, **self.kwargs}

    def generate(self, requests: list[Request]) -> list[Response]:
        responses = []
        for request in requests:
            try:
                output = self.function(request, **self.kwargs)
            except Exception as exc:  # a user's function failing on one sample is recorded
                responses.append(Response(text="", error=f"{type(exc).__name__}: {exc}"))
                continue
            responses.append(output if isinstance(output, Response) else Response(text=str(output)))
        return responses
