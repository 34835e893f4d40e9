"""ggr-hf: GGR prior-guided multi-head generative recommenders for the Hugging Face ecosystem.

`import ggr_hf` is cheap: it loads neither torch nor transformers, so that data preparation
(`ggr-hf data prepare`, `ggr_hf.data`) starts in about a second. The public classes load on first
access, the way transformers' own top-level module does it:

```python
from ggr_hf import GGRForRecommendation  # loads torch/transformers

model = GGRForRecommendation.from_pretrained("path/or/repo")
```

The `ggr`, `ggr_heads`, `hstu` and `hllm` model types are registered with transformers'
`AutoConfig` / `AutoModel` as soon as transformers is imported, whether before or after ggr_hf, so
`import ggr_hf; transformers.AutoModel.from_pretrained(folder)` loads a saved ggr-hf model (see
`ggr_hf.auto`; no `trust_remote_code`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "GGRConfig": "ggr_hf.configuration_ggr",
    "GGRHeadsConfig": "ggr_hf.configuration_heads",
    "GGRForRecommendation": "ggr_hf.modeling_ggr",
    "GGROutput": "ggr_hf.modeling_ggr",
    "Recommendation": "ggr_hf.modeling_ggr",
    "GGRBackboneModel": "ggr_hf.models.backbone",
    "GGRBackboneOutput": "ggr_hf.models.backbone",
    "HSTUConfig": "ggr_hf.models.hstu.configuration_hstu",
    "HSTUModel": "ggr_hf.models.hstu.modeling_hstu",
    "HLLMConfig": "ggr_hf.models.hllm.configuration_hllm",
    "HLLMModel": "ggr_hf.models.hllm.modeling_hllm",
    "SASRecConfig": "ggr_hf.models.sasrec.configuration_sasrec",
    "SASRecModel": "ggr_hf.models.sasrec.modeling_sasrec",
    "ItemEmbeddingConfig": "ggr_hf.models.embedding.configuration_embedding",
    "ItemEmbeddingModel": "ggr_hf.models.embedding.modeling_embedding",
    "ComiRecConfig": "ggr_hf.baselines.configuration_comirec",
    "RemiConfig": "ggr_hf.baselines.configuration_comirec",
    "ComiRecForRecommendation": "ggr_hf.baselines.modeling_comirec",
    "RemiForRecommendation": "ggr_hf.baselines.modeling_comirec",
    "DualVAEConfig": "ggr_hf.baselines.configuration_dualvae",
    "DualVAEForRecommendation": "ggr_hf.baselines.modeling_dualvae",
    "RecommenderMixin": "ggr_hf.modeling_recommender",
    "load_recommender": "ggr_hf.recommenders",
    "Prior": "ggr_hf.priors.base",
    "register_prior": "ggr_hf.priors.base",
}

__all__ = [
    "ComiRecConfig",
    "ComiRecForRecommendation",
    "DualVAEConfig",
    "DualVAEForRecommendation",
    "ItemEmbeddingConfig",
    "ItemEmbeddingModel",
    "RecommenderMixin",
    "RemiConfig",
    "RemiForRecommendation",
    "SASRecConfig",
    "SASRecModel",
    "load_recommender",
    "GGRBackboneModel",
    "GGRBackboneOutput",
    "GGRConfig",
    "GGRForRecommendation",
    "GGRHeadsConfig",
    "GGROutput",
    "HLLMConfig",
    "HLLMModel",
    "HSTUConfig",
    "HSTUModel",
    "Prior",
    "Recommendation",
    "__version__",
    "register_prior",
]

if TYPE_CHECKING:
    from ggr_hf.configuration_ggr import GGRConfig
    from ggr_hf.configuration_heads import GGRHeadsConfig
    from ggr_hf.modeling_ggr import GGRForRecommendation, GGROutput, Recommendation
    from ggr_hf.models.backbone import GGRBackboneModel, GGRBackboneOutput
    from ggr_hf.models.hllm.configuration_hllm import HLLMConfig
    from ggr_hf.models.hllm.modeling_hllm import HLLMModel
    from ggr_hf.models.hstu.configuration_hstu import HSTUConfig
    from ggr_hf.models.hstu.modeling_hstu import HSTUModel
    from ggr_hf.priors.base import Prior, register_prior


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ggr_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _RegisterWhenTransformersLoads(importlib.abc.MetaPathFinder):
    """Registers ggr-hf's Auto classes right after `import transformers` completes.

    Registration needs torch and ggr-hf's model classes, which `import ggr_hf` must not load (the
    data commands would start several seconds slower). transformers has no plug-in entry point, so
    this one-shot finder wraps the loader of the `transformers` package: once its module has run,
    `ggr_hf.auto` registers everything. Whoever uses the Auto classes has imported transformers.
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("transformers")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run_module(module)
            # A ggr-hf module that imports transformers is half-initialised here; importing
            # `ggr_hf.auto` now would fail on it. Each such module registers its own classes when
            # it completes (`configuration_ggr`, `configuration_heads`, `modeling_ggr`).
            if not _ggr_module_initializing():
                importlib.import_module("ggr_hf.auto")

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _ggr_module_initializing() -> bool:
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith("ggr_hf.")
    )


if "transformers" in sys.modules and not _ggr_module_initializing():
    importlib.import_module("ggr_hf.auto")
elif not any(isinstance(f, _RegisterWhenTransformersLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenTransformersLoads())
