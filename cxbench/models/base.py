"""The model backend contract: a batch of Requests in, one Response per request out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from cxbench.schema import Request, Response

if TYPE_CHECKING:
    from cxbench.tasks import Task


class ModelError(RuntimeError):
    """A model cannot be built or loaded; the message says what to do."""


class Model(ABC):
    """A backend. Results must not depend on the batch size it is given."""

    #: short name used in result paths and tables
    name: str = "model"

    def prepare(self, task: Task) -> None:  # noqa: B027 - optional hook
        """Called once per task before generation (e.g. to fit a baseline on the train split)."""

    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the model's answers could change (weights, args).

        It keys the response cache, so it must be valid after ``prepare``.
        """

    @abstractmethod
    def generate(self, requests: list[Request]) -> list[Response]:
        """One Response per Request, in order. Per-request failures go in ``Response.error``."""

    def config(self) -> dict:
        """Settings recorded in result files."""
        return {}
