"""ggr-hf: GGR prior-guided multi-head generative recommenders for the Hugging Face ecosystem."""

__version__ = "0.1.0"

from ggr_hf import auto as _auto  # noqa: E402,F401  (registers GGR, HSTU, HLLM with the Auto classes)
from ggr_hf.configuration_ggr import GGRConfig  # noqa: E402
from ggr_hf.modeling_ggr import GGRForRecommendation, Recommendation  # noqa: E402
from ggr_hf.models.hstu.configuration_hstu import HSTUConfig  # noqa: E402
from ggr_hf.models.hstu.modeling_hstu import HSTUModel  # noqa: E402

__all__ = ["GGRConfig", "GGRForRecommendation", "HSTUConfig", "HSTUModel", "Recommendation", "__version__"]
