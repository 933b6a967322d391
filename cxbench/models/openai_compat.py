"""A backend for any OpenAI-compatible ``/v1/chat/completions`` server.

Works with ``vllm serve``, SGLang, TGI, hosted APIs, and ``cxbench serve`` (which exposes any
cxbench model the same way). Standard library only: each request runs in a bounded thread
pool over ``http.client``, with a per-attempt deadline and retries.

Each request is independent of the others in its batch (no shared state, per-request seeded
jitter), so results do not depend on the batch size. A request that still fails after its
retries becomes ``Response(text="", error=...)``; ``generate`` never raises for one sample.

Retried: HTTP 429 (waiting ``Retry-After`` when given, capped), 5xx, connection errors,
timeouts, and unreadable (malformed JSON or missing fields) 200 answers. Other 4xx are not
retried: the request itself is wrong.

Caching note: :meth:`OpenAIModel.identity` is built from the URL, the model name and the
extra body fields only. The client cannot see what runs behind the server: if the served
weights change under the same name, cached answers are *not* invalidated. Use a new
``name``/model string, or ``--no-cache``, when the server-side model changes.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import mimetypes
import os
import random
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cxbench.models.base import Model, ModelError
from cxbench.schema import Request, Response

#: generation keys of a cxbench Request -> OpenAI chat-completions body keys
GENERATION_KEYS = {
    "max_new_tokens": "max_tokens",
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "seed": "seed",
}
#: never wait longer than this between two attempts, whatever Retry-After says (seconds)
MAX_RETRY_WAIT = 30.0
_MAX_ERROR_TEXT = 300

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def image_mime(path: str | Path, data: bytes) -> str:
    """The MIME type of an image: from its first bytes, else its file name, else PNG."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    guessed, _ = mimetypes.guess_type(str(path))
    return guessed if guessed and guessed.startswith("image/") else "image/png"


def image_data_url(path: str | Path) -> str:
    """A ``data:<mime>;base64,...`` URL holding the file's bytes (DICOM: rendered to an 8-bit PNG)."""
    from cxbench.images import is_dicom

    if is_dicom(path):  # no server decodes DICOM: send it as cxbench.images renders it
        import io

        from cxbench.images import load_image

        buffer = io.BytesIO()
        load_image(path).save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    data = Path(path).read_bytes()
    return f"data:{image_mime(path, data)};base64,{base64.b64encode(data).decode('ascii')}"


def to_openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """cxbench chat messages -> OpenAI messages (image paths become base64 data URLs)."""
    converted = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    parts.append({"type": "image_url", "image_url": {"url": image_data_url(part["path"])}})
                else:
                    parts.append(part)
            content = parts
        converted.append({**message, "content": content})
    return converted


class _AttemptError(Exception):
    """One failed attempt; ``retry`` says whether another attempt may help."""

    def __init__(self, message: str, retry: bool, wait: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.wait = wait  # server-requested wait (Retry-After), seconds


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent/unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(body: bytes) -> str:
    """The server's error message, if its body has one, shortened."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        if isinstance(error, dict):
            error = error.get("message", error)
        text = error if isinstance(error, str) else json.dumps(error)
    except (json.JSONDecodeError, ValueError):
        pass
    return text[:_MAX_ERROR_TEXT]


def _message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise TypeError(f"message content is a {type(content).__name__}")


class OpenAIModel(Model):
    """Chat completions from an OpenAI-compatible server.

    ``model`` is the server's model name; ``base_url`` ends before ``/chat/completions``.
    The API key is read from the environment variable named by ``api_key_env`` (no
    ``Authorization`` header when it is unset). ``timeout`` bounds each attempt (seconds),
    ``max_retries`` the extra attempts after the first, ``backoff`` the first retry wait
    (doubled each time, plus up to 50% jitter seeded by ``seed`` and the sample id), and
    ``max_retry_wait`` caps any one wait, including a server's ``Retry-After``. One request
    therefore never takes longer than ``(max_retries + 1) * timeout + max_retries *
    max_retry_wait`` seconds, whatever the server does (a trickle of bytes included).
    ``send_cxbench_fields`` adds ``"cxbench": {task, family, sample_id, choices, query}``
    to each body, for ``cxbench serve`` (structured baselines need it); real servers would
    reject or ignore it, so it is off by default. Any other keyword goes into the body as is
    (e.g. ``top_k=20`` for vLLM).
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_retry_wait: float = MAX_RETRY_WAIT,
        name: str | None = None,
        send_cxbench_fields: bool = False,
        seed: int = 0,
        **extra_body: Any,
    ) -> None:
        self.model = str(model)
        self.base_url = str(base_url).rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelError(f"openai: base_url must be an http(s) URL, got {base_url!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "") + "/chat/completions"
        self.api_key_env = api_key_env
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = max(0.0, float(backoff))
        self.max_retry_wait = max(0.0, float(max_retry_wait))
        self.send_cxbench_fields = bool(send_cxbench_fields)
        self.seed = int(seed)
        self.extra_body = dict(extra_body)
        self.name = name or f"openai-{self.model.replace('/', '_')}"

    # ----------------------------------------------------------------- contract

    def identity(self) -> str:
        identity = f"openai:{self.base_url}:{self.model}:{sorted(self.extra_body.items())}"
        if self.send_cxbench_fields:  # the server sees more than the messages: other answers
            identity += ":cxbench-fields"
        return identity

    def config(self) -> dict:
        return {
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "backoff": self.backoff,
            "max_retry_wait": self.max_retry_wait,
            "send_cxbench_fields": self.send_cxbench_fields,
            "seed": self.seed,
            "extra_body": dict(sorted(self.extra_body.items())),
        }

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        if len(requests) == 1 or self.concurrency == 1:
            return [self._complete(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._complete, requests))

    # ----------------------------------------------------------------- one request

    def build_body(self, request: Request) -> dict[str, Any]:
        """The JSON body sent for ``request`` (images inlined as data URLs)."""
        body: dict[str, Any] = {"model": self.model, "messages": to_openai_messages(request.messages)}
        for key, value in request.generation.items():
            if key in GENERATION_KEYS and value is not None:
                body[GENERATION_KEYS[key]] = value
        body.update(self.extra_body)
        if self.send_cxbench_fields:
            body["cxbench"] = {
                "task": request.task,
                "family": request.family,
                "sample_id": request.sample_id,
                "choices": request.choices,
                "query": request.query,
            }
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _complete(self, request: Request) -> Response:
        try:
            payload = json.dumps(self.build_body(request), ensure_ascii=False).encode("utf-8")
        except (OSError, TypeError, ValueError) as exc:
            return Response(text="", error=f"openai: cannot build the request: {type(exc).__name__}: {exc}")
        headers = self._headers()
        rng = random.Random(f"{self.seed}/{request.task}/{request.sample_id}")
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            try:
                text, usage = self._attempt(payload, headers)
            except _AttemptError as exc:
                if not exc.retry:
                    return Response(text="", error=f"openai: {exc} (not retried, after {attempt} attempt(s))")
                if attempt == attempts:
                    return Response(text="", error=f"openai: {exc} (after {attempt} attempt(s))")
                if exc.wait is not None:
                    wait = min(exc.wait, self.max_retry_wait)
                else:
                    wait = self.backoff * 2 ** (attempt - 1) * (1 + 0.5 * rng.random())
                    wait = min(wait, self.max_retry_wait)
                time.sleep(wait)
                continue
            return Response(
                text=text,
                input_tokens=usage.get("prompt_tokens"),
                output_tokens=usage.get("completion_tokens"),
                latency_s=round(time.perf_counter() - started, 6),
            )
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _attempt(self, payload: bytes, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """One HTTP exchange, bounded by ``timeout`` overall; returns (text, usage)."""
        deadline = time.monotonic() + self.timeout
        connection = self._connection()
        try:
            connection.request("POST", self._path, body=payload, headers=headers)
            connection.sock.settimeout(max(0.001, deadline - time.monotonic()))
            response = connection.getresponse()
            chunks = []
            while True:  # read in pieces so that a slow trickle cannot outlive the deadline
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                if connection.sock is not None:
                    connection.sock.settimeout(remaining)
                chunk = response.read1(65536)  # one recv at most: the deadline is checked often
                if not chunk:
                    break
                chunks.append(chunk)
            body = b"".join(chunks)
            if response.length:  # read1 returns b"" at EOF even when the declared length is not reached
                raise http.client.IncompleteRead(body, response.length)
            status = response.status
            retry_after = response.getheader("Retry-After")
        except TimeoutError:
            raise _AttemptError(f"timed out after {self.timeout:g}s", retry=True) from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise _AttemptError(f"connection error: {type(exc).__name__}: {reason}", retry=True) from None
        finally:
            connection.close()
        if status == 429:
            raise _AttemptError(
                f"HTTP 429 (rate limited): {_error_text(body)}", retry=True, wait=_retry_after(retry_after)
            )
        if status >= 500:
            raise _AttemptError(f"HTTP {status}: {_error_text(body)}", retry=True)
        if status >= 400:
            raise _AttemptError(f"HTTP {status}: {_error_text(body)}", retry=False)
        if status != 200:
            raise _AttemptError(f"unexpected HTTP {status}: {_error_text(body)}", retry=True)
        try:
            answer = json.loads(body)
            text = _message_text(answer["choices"][0]["message"]["content"])
            usage = answer.get("usage") or {}
            if not isinstance(usage, dict):
                usage = {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _AttemptError(f"malformed JSON in the answer: {exc}", retry=True) from None
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise _AttemptError(
                f"answer has no choices[0].message.content ({type(exc).__name__}: {exc}): "
                f"{body[:_MAX_ERROR_TEXT].decode('utf-8', 'replace')}",
                retry=True,
            ) from None
        return text, usage
