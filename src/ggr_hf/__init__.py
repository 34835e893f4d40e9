"""ggr-hf: GGR prior-guided multi-head generative recommenders for the Hugging Face ecosystem."""

__version__ = "0.1.0"

from ggr_hf import auto as _auto  # noqa: E402,F401  (registers GGR, HSTU, HLLM with the Auto classes)
