"""``cxbench serve MODEL``: any cxbench model behind an OpenAI-compatible HTTP endpoint.

Endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models``. Standard library only
(:class:`http.server.ThreadingHTTPServer`); binds loopback unless told otherwise.

An incoming chat request becomes a cxbench :class:`~cxbench.schema.Request`:

* ``image_url`` parts holding ``data:`` URLs are decoded to files named by the sha256 of
  their bytes in a private temporary folder (removed when the server closes); remote URLs
  are refused (the server makes no network calls);
* ``max_tokens``/``temperature``/``top_p``/``stop``/``seed`` become ``generation``;
* the optional extension field ``"cxbench": {"task", "family", "sample_id", "choices",
  "query"}`` (sent by ``OpenAIModel(..., send_cxbench_fields=True)``) carries the structured
  fields that baselines such as ``prior`` answer from. When it names a task, the model is
  prepared for that task (``model.prepare(get_task(name))``) once, on first use.

Model calls are serialised (cxbench models are not required to be thread-safe).

Fault injection (off by default; for testing clients): with ``faults=FaultConfig()``, a
request whose ``cxbench.sample_id`` contains

* ``fault500`` gets HTTP 500, every time;
* ``faultslow`` is answered only after ``FaultConfig.slow_s`` seconds;
* ``faultjson`` gets a 200 whose body is not valid JSON;
* ``fault429-once`` gets HTTP 429 with ``Retry-After: FaultConfig.retry_after`` on its
  first attempt only, then a normal answer; ``fault429`` (without ``-once``) every time;
  ``fault429-long`` every time with ``Retry-After: FaultConfig.long_retry_after`` (an hour by
  default: clients must cap it); ``fault429-date`` once, with Retry-After as an HTTP date;
* ``faultdrop`` gets the status line, headers and half of a valid body, then the connection is
  closed (a server dying mid-response);
* ``faultreset`` gets no answer: the connection is reset (TCP RST) right after the request;
* ``faulttrickle`` gets a valid answer one byte every ``FaultConfig.trickle_s`` seconds (a
  client deadline must cut it off);
* ``faulthang`` gets nothing until the server shuts down;
* ``faultempty`` gets a 200 with an empty body; ``faulthtml`` a 502 with an HTML proxy page;
* ``fault500-twice`` gets HTTP 500 on its first two attempts, then a normal answer.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import email.utils
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cxbench.models.base import Model, ModelError
from cxbench.schema import Request

#: OpenAI body keys -> cxbench generation keys
GENERATION_FROM_OPENAI = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "seed": "seed",
}
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
    "image/webp": ".webp",
}
MAX_BODY_BYTES = 256 * 1024 * 1024


class BadRequest(ValueError):
    """The client sent something the server cannot turn into a cxbench Request (HTTP 400)."""


@dataclass
class FaultConfig:
    """Which injected faults a test server produces (see the module docstring)."""

    slow_s: float = 5.0  # delay of ``faultslow`` requests
    retry_after: str = "0"  # Retry-After header of ``fault429`` answers
    long_retry_after: str = "3600"  # Retry-After header of ``fault429-long`` answers
    trickle_s: float = 0.2  # seconds between two bytes of a ``faulttrickle`` answer
    markers: dict[str, str] = field(
        default_factory=lambda: {
            "fault500-twice": "500-twice",
            "fault500": "500",
            "faultslow": "slow",
            "faultjson": "json",
            "fault429-once": "429-once",
            "fault429-long": "429-long",
            "fault429-date": "429-date",
            "fault429": "429",
            "faultdrop": "drop",
            "faultreset": "reset",
            "faulttrickle": "trickle",
            "faulthang": "hang",
            "faultempty": "empty",
            "faulthtml": "html",
        }
    )

    def fault_for(self, sample_id: str) -> str | None:
        # longest marker first, so "fault429-once" wins over "fault429"
        for marker in sorted(self.markers, key=len, reverse=True):
            if marker in sample_id:
                return self.markers[marker]
        return None


class CxbenchHTTPServer(ThreadingHTTPServer):
    """The HTTP server plus the served model and its bookkeeping."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        model: Model,
        faults: FaultConfig | None = None,
        include_paths: Iterable[str | Path] = (),
        served_name: str | None = None,
        log_requests: bool = False,
    ) -> None:
        self.model = model
        self.faults = faults
        self.include_paths = [str(p) for p in include_paths]
        self.served_name = served_name or model.name
        self.log_requests = log_requests
        self.image_dir = Path(tempfile.mkdtemp(prefix="cxbench-serve-"))
        self.model_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.stopping = threading.Event()
        self.prepared: set[str] = set()
        self.attempts: Counter = Counter()  # requests seen per sample id
        # the latest Requests handed to the model, in arrival order (bounded: servers run long)
        self.received: deque[Request] = deque(maxlen=10_000)
        try:
            super().__init__(address, ChatHandler)
        except BaseException:
            shutil.rmtree(self.image_dir, ignore_errors=True)
            raise

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/v1"

    def shutdown(self) -> None:
        self.stopping.set()  # cut injected delays short
        super().shutdown()

    def server_close(self) -> None:
        self.stopping.set()
        super().server_close()
        shutil.rmtree(self.image_dir, ignore_errors=True)

    # ------------------------------------------------------------- conversion

    def save_image(self, url: str) -> str:
        """Decode a ``data:`` URL into a content-addressed file; returns its path."""
        if not url.startswith("data:"):
            raise BadRequest("only data: image URLs are supported (the server fetches nothing)")
        header, sep, data = url[5:].partition(",")
        if not sep or not header.endswith(";base64"):
            raise BadRequest("image data URLs must be base64 encoded: data:<mime>;base64,...")
        mime = header[: -len(";base64")].strip().lower() or "image/png"
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("image data URL is not valid base64") from None
        if not raw:
            raise BadRequest("image data URL is empty")
        path = self.image_dir / (hashlib.sha256(raw).hexdigest() + _EXTENSIONS.get(mime, ".img"))
        if not path.exists():
            partial = path.with_name(f"{path.name}.{threading.get_ident()}.part")
            partial.write_bytes(raw)
            os.replace(partial, path)  # atomic: concurrent writers of one image never clash
        return str(path)

    def to_request(self, body: Any) -> Request:
        """An OpenAI chat-completions body -> a cxbench Request."""
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        if body.get("stream"):
            raise BadRequest("streaming is not supported")
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise BadRequest("'messages' must be a non-empty list")
        messages, images = [], []
        for message in raw_messages:
            if not isinstance(message, dict) or "content" not in message:
                raise BadRequest("each message must be an object with 'role' and 'content'")
            content = message["content"]
            if isinstance(content, list):
                parts = []
                for part in content:
                    if not isinstance(part, dict):
                        raise BadRequest("content parts must be objects")
                    if part.get("type") == "image_url":
                        image = part.get("image_url")
                        url = image.get("url") if isinstance(image, dict) else image
                        if not isinstance(url, str):
                            raise BadRequest("image_url parts need a url")
                        path = self.save_image(url)
                        images.append(path)
                        parts.append({"type": "image", "path": path})
                    elif part.get("type") == "text":
                        parts.append({"type": "text", "text": str(part.get("text", ""))})
                    else:
                        raise BadRequest(f"unsupported content part type {part.get('type')!r}")
                content = parts
            elif content is None:
                content = ""
            elif not isinstance(content, str):
                raise BadRequest("message content must be a string or a list of parts")
            messages.append({"role": str(message.get("role", "user")), "content": content})
        generation = {
            target: body[source] for source, target in GENERATION_FROM_OPENAI.items() if source in body
        }
        extra = body.get("cxbench") or {}
        if not isinstance(extra, dict):
            raise BadRequest("'cxbench' must be an object")
        sample_id = extra.get("sample_id")
        if sample_id is None:  # a stable id from the content, so seeded models stay reproducible
            digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
            sample_id = f"request-{digest}"
        return Request(
            sample_id=str(sample_id),
            task=str(extra.get("task") or ""),
            family=str(extra.get("family") or ""),
            messages=messages,
            images=images,
            generation=generation,
            choices=extra.get("choices"),
            query=dict(extra.get("query") or {}),
        )

    def prepare_for(self, task_name: str) -> None:
        """``model.prepare(task)`` once per task name (caller holds ``model_lock``)."""
        if not task_name or task_name in self.prepared:
            return
        from cxbench.tasks import TaskError, get_task

        try:
            task = get_task(task_name, self.include_paths)
        except TaskError as exc:
            raise BadRequest(str(exc)) from None
        self.model.prepare(task)
        self.prepared.add(task_name)


class ChatHandler(BaseHTTPRequestHandler):
    server: CxbenchHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "cxbench-serve"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        if self.server.log_requests:
            super().log_message(format, *args)

    def _send(self, status: int, payload: Any = None, raw: bytes | None = None, headers=None) -> None:
        data = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout); nothing to do

    def _error(self, status: int, message: str, kind: str = "invalid_request_error", headers=None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}}, headers=headers)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            entry = {"id": self.server.served_name, "object": "model", "owned_by": "cxbench", "created": 0}
            self._send(200, {"object": "list", "data": [entry]})
        elif path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no such endpoint: GET {self.path}")

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no such endpoint: POST {self.path}")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._error(411, "a Content-Length header is required")
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, f"body larger than {MAX_BODY_BYTES} bytes")
            return
        raw = self.rfile.read(length)
        server = self.server
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._error(400, f"body is not valid JSON: {exc}")
            return
        extra = body.get("cxbench") if isinstance(body, dict) else None
        sample_id = str(extra.get("sample_id", "")) if isinstance(extra, dict) else ""
        with server.state_lock:
            server.attempts[sample_id] += 1
            attempt = server.attempts[sample_id]
        if server.faults is not None and sample_id and self._inject(server.faults, sample_id, attempt):
            return
        try:
            request = server.to_request(body)
            with server.model_lock:
                server.prepare_for(request.task)
                with server.state_lock:
                    server.received.append(request)
                responses = server.model.generate([request])
        except (BadRequest, ModelError) as exc:
            self._error(400, str(exc))
            return
        except Exception as exc:  # a model crash is the server's fault, and may be transient
            self._error(500, f"model failed: {type(exc).__name__}: {exc}", kind="server_error")
            return
        if len(responses) != 1:
            self._error(500, f"model returned {len(responses)} responses for 1 request", kind="server_error")
            return
        response = responses[0]
        if response.error:
            self._error(500, f"model error: {response.error}", kind="server_error")
            return
        usage = {}
        if response.input_tokens is not None:
            usage["prompt_tokens"] = int(response.input_tokens)
        if response.output_tokens is not None:
            usage["completion_tokens"] = int(response.output_tokens)
        if len(usage) == 2:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        digest = hashlib.sha256(raw).hexdigest()[:24]
        self._send(
            200,
            {
                "id": f"chatcmpl-{digest}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": server.served_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": response.text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )

    def _inject(self, faults: FaultConfig, sample_id: str, attempt: int) -> bool:
        """Produce the configured fault for this request; True if the request was answered."""
        fault = faults.fault_for(sample_id)
        if fault == "500" or (fault == "500-twice" and attempt <= 2):
            self._error(500, "injected fault: internal server error", kind="server_error")
        elif fault == "429-long":
            self._error(
                429,
                "injected fault: rate limited",
                "rate_limit_error",
                {"Retry-After": faults.long_retry_after},
            )
        elif fault == "429-date" and attempt == 1:
            when = email.utils.formatdate(time.time() + 1, usegmt=True)
            self._error(429, "injected fault: rate limited", "rate_limit_error", {"Retry-After": when})
        elif fault in ("drop", "trickle"):
            body = json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": "yes " * 40}}]}
            ).encode()
            self.close_connection = True
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    for i in range(len(body)):
                        if self.server.stopping.wait(faults.trickle_s):
                            break
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
            except OSError:
                pass  # the client gave up
        elif fault == "reset":
            self.close_connection = True
            # SO_LINGER with a zero timeout: close() sends a TCP RST instead of a clean FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif fault == "hang":
            self.close_connection = True
            self.server.stopping.wait()
        elif fault == "empty":
            self._send(200, raw=b"")
        elif fault == "html":
            page = b"<html><body><h1>502 Bad Gateway</h1><script>alert(1)</script></body></html>"
            self._send(502, raw=page, headers={"Content-Type": "text/html"})
        elif fault == "json":
            self._send(200, raw=b'{"choices": [{"message": {"content": "tru')
        elif fault == "429" or (fault == "429-once" and attempt == 1):
            self._error(
                429, "injected fault: rate limited", "rate_limit_error", {"Retry-After": faults.retry_after}
            )
        elif fault == "slow":
            if self.server.stopping.wait(faults.slow_s):
                self._error(503, "server shutting down", kind="server_error")
                return True
            return False  # then answer normally (if the client still listens)
        else:
            return False
        return True


def make_server(
    model: Model,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: FaultConfig | None = None,
    include_paths: Iterable[str | Path] = (),
    served_name: str | None = None,
    log_requests: bool = False,
) -> CxbenchHTTPServer:
    """A server for ``model`` bound to (host, port); port 0 picks a free port.

    Call ``serve_forever()`` to run it, then ``shutdown()`` and ``server_close()`` (which
    removes the decoded images). ``include_paths`` are extra task folders for ``prepare``.
    """
    return CxbenchHTTPServer((host, port), model, faults, include_paths, served_name, log_requests)


def serve_in_thread(model: Model, **kwargs: Any) -> tuple[CxbenchHTTPServer, str]:
    """Start :func:`make_server` in a daemon thread; returns (server, base_url).

    Stop it with ``server.shutdown(); server.server_close()``.
    """
    server = make_server(model, **kwargs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.thread = thread  # type: ignore[attr-defined]
    return server, server.base_url


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cxbench serve``."""
    parser.add_argument("model", metavar="MODEL", help="model spec, as for `cxbench run --model`")
    parser.add_argument("--model-args", default="", metavar="K=V,...", help="arguments for the model")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding a non-loopback address (no authentication!)",
    )
    parser.add_argument(
        "--served-name", default=None, help="model name reported to clients (default: model's)"
    )
    parser.add_argument(
        "--include-path", action="append", default=[], metavar="DIR", help="extra folder of task YAMLs"
    )
    parser.add_argument(
        "--inject-faults",
        action="store_true",
        help="enable test faults by sample id (fault500, faultslow, ...)",
    )
    parser.add_argument("--log-requests", action="store_true", help="log each HTTP request to stderr")


def cli_serve(args: argparse.Namespace) -> int:
    """Run ``cxbench serve`` until interrupted."""
    from cxbench.models import load_model, parse_model_args

    if not is_loopback(args.host) and not args.allow_remote:
        print(
            f"cxbench serve: refusing to bind non-loopback address {args.host!r}; "
            "the server has no authentication. Pass --allow-remote to do it anyway.",
            file=sys.stderr,
        )
        return 2
    try:
        model = load_model(args.model, parse_model_args(args.model_args))
    except TypeError as exc:
        raise ValueError(f"--model-args for {args.model!r}: {exc}") from None
    server = make_server(
        model,
        host=args.host,
        port=args.port,
        faults=FaultConfig() if args.inject_faults else None,
        include_paths=args.include_path,
        served_name=args.served_name,
        log_requests=args.log_requests,
    )
    print(
        f"cxbench serve: {args.model} as {server.served_name!r} at {server.base_url} "
        f"(client: --model openai:{server.served_name} --model-args base_url={server.base_url}"
        ",send_cxbench_fields=true)",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("cxbench serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


__all__ = [
    "BadRequest",
    "CxbenchHTTPServer",
    "FaultConfig",
    "add_serve_arguments",
    "cli_serve",
    "is_loopback",
    "make_server",
    "serve_in_thread",
]
