"""ggr-hf: GGR prior-guided multi-head generative recommenders for the Hugging Face ecosystem."""

__version__ = "0.1.0"
