"""ggr-hf: GGR prior-guided multi-head generative recommenders for the Hugging Face ecosystem.

`import ggr_hf` is cheap: it loads neither torch nor transformers, so that data preparation
(`ggr-hf data prepare`, `ggr_hf.data`) starts in about a second. The public classes load on first
access, the way transformers' own top-level module does it:

```python
from ggr_hf import GGRForRecommendation  # loads torch/transformers and registers the Auto classes

model = GGRForRecommendation.from_pretrained("path/or/repo")
```

Accessing any model or config class through `ggr_hf` (or `import ggr_hf.auto`) registers the
`ggr`, `hstu`, `ggr_heads` and `hllm` model types with `AutoConfig` / `AutoModel`; see `ggr_hf.auto`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "GGRConfig": "ggr_hf.configuration_ggr",
    "GGRForRecommendation": "ggr_hf.modeling_ggr",
    "Recommendation": "ggr_hf.modeling_ggr",
    "HSTUConfig": "ggr_hf.models.hstu.configuration_hstu",
    "HSTUModel": "ggr_hf.models.hstu.modeling_hstu",
}

__all__ = ["GGRConfig", "GGRForRecommendation", "HSTUConfig", "HSTUModel", "Recommendation", "__version__"]

if TYPE_CHECKING:
    from ggr_hf.configuration_ggr import GGRConfig
    from ggr_hf.modeling_ggr import GGRForRecommendation, Recommendation
    from ggr_hf.models.hstu.configuration_hstu import HSTUConfig
    from ggr_hf.models.hstu.modeling_hstu import HSTUModel


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ggr_hf' has no attribute {name!r}")
    # Registration first: whoever reaches a model class through the package can then also use
    # AutoModel / AutoConfig on ggr-hf checkpoints.
    importlib.import_module("ggr_hf.auto")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
