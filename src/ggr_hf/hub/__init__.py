"""Hub packaging of GGR models: saving, loading, heads-only artifacts, model cards and pushing.

| module | what |
|---|---|
| `ggr_hf.hub.io` | `config.json`, safetensors, atomic folder publication, local folder vs. Hub id (a leaf) |
| `ggr_hf.hub.card` | model cards rendered from a saved folder and the results passed in |
| `ggr_hf.hub.loading` | `load_ggr`, `load_heads_into`, `save_heads`, `save_model` |
| `ggr_hf.hub.push` | `push_model_to_hub` |
| `ggr_hf.hub.runs` | run folders: the started and completeness markers a training run writes, `run_status` |

The heads-only configuration, [`GGRHeadsConfig`], lives in `ggr_hf.configuration_heads` beside
`GGRConfig`. Nothing here imports `ggr_hf.modeling_ggr`, which imports this package.
"""

from ggr_hf.configuration_heads import GGRHeadsConfig
from ggr_hf.hub.card import build_model_card, render_model_card
from ggr_hf.hub.loading import load_ggr, load_heads_into, save_heads, save_model
from ggr_hf.hub.push import push_model_to_hub

__all__ = [
    "GGRHeadsConfig",
    "build_model_card",
    "load_ggr",
    "load_heads_into",
    "push_model_to_hub",
    "render_model_card",
    "save_heads",
    "save_model",
]
