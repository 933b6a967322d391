"""Bridges between cxbench and other evaluation harnesses (lm-evaluation-harness)."""

from cxbench.interop.lm_eval import export_tasks, import_samples

__all__ = ["export_tasks", "import_samples"]
