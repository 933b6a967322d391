"""cxbench: a benchmark and evaluation suite for chest X-ray multimodal LLMs.

Importing cxbench loads no model, no torch and no Java; submodules are imported on use.
"""

__version__ = "0.1.0"
