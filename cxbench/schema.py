"""The records that flow through cxbench: Sample -> Request -> Response -> scored row.

Every record is a plain dataclass that round-trips through JSON, so a per-sample
log can be re-scored later without the model (see ``cxbench score``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Version of the results JSON written by the runner. Bump on incompatible change.
RESULT_SCHEMA_VERSION = "1.0"
#: Version of the per-sample JSONL log rows.
LOG_SCHEMA_VERSION = "1.0"

Box = list[float]  # [x1, y1, x2, y2] normalised to [0, 1] of the stored image


@dataclass
class Sample:
    """One evaluation item, as produced by a dataset adapter.

    ``images`` is ordered: temporal tasks list the prior image first, then the current.
    ``target`` holds the gold answer: a string (text / label / option letter), a list of
    labels, or a list of boxes, depending on the task family.
    ``query`` holds structured facts about the question (e.g. which finding is asked
    about) that the prompt template renders; it never contains the answer.
    """

    id: str
    images: list[str]
    question: str
    target: Any
    choices: list[str] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Request:
    """What a model backend receives: chat messages with images, plus generation settings.

    ``messages`` follow the OpenAI/transformers chat layout; image parts carry a local
    ``path``. ``task``/``family``/``query``/``choices`` are given so that structured
    baselines can answer without parsing prose; real models use only ``messages``.
    """

    sample_id: str
    task: str
    family: str
    messages: list[dict[str, Any]]
    images: list[str]
    generation: dict[str, Any]
    choices: list[str] | None = None
    query: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The text parts of the user messages, joined (for logs and text-only models)."""
        parts = []
        for message in self.messages:
            content = message["content"]
            if isinstance(content, str):
                parts.append(content)
                continue
            parts.extend(p["text"] for p in content if p.get("type") == "text")
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Response:
    """A model's answer to one request."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float | None = None
    error: str | None = None  # set when the backend failed on this request

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
