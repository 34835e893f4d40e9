"""Every shipped recipe parses and builds a valid model config (GGR's or a baseline's), so users
never hit a typo at launch."""

from pathlib import Path

import pytest
import yaml

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.experiments.ablation import load_ablation_spec
from ggr_hf.experiments.compare import load_model_list
from ggr_hf.experiments.config import load_experiment_config
from ggr_hf.recommenders import build_recommender_config

CONFIGS = sorted((Path(__file__).parents[1] / "recipes" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipe_parses_and_validates(path):
    raw = yaml.safe_load(path.read_text())
    if "models" in raw:
        # A models file for `ggr-hf compare --models`: every entry builds its config.
        models = load_model_list(path)
        assert len(models) >= 2
        for section in models.values():
            build_recommender_config(section, 10)
        return
    if "variants" in raw:
        spec = load_ablation_spec(path)
        for variant in spec.variants:
            if not variant.eval_of:
                GGRConfig(num_items=10, **{**spec.base.model, **variant.model})
        return
    cfg = load_experiment_config(path)
    backbone = cfg.model.get("backbone_config") or {}
    hub_ids = [v for k, v in backbone.items() if k in ("item_llm", "user_llm") and isinstance(v, str)]
    if any(not Path(v).exists() for v in hub_ids):
        # GPU recipes name Hub models, whose config.json would have to be downloaded.
        pytest.skip(f"{path.name} names Hub models {hub_ids}; no download in tests")
    build_recommender_config(cfg.model, 10)


def test_there_are_recipes_for_each_public_data_set():
    names = {p.name for p in CONFIGS}
    for prefix in ("ml100k_quick", "ml100k_main", "ml100k_ablation", "pixel8m_", "merrec_", "ebnerd_"):
        assert any(n.startswith(prefix) for n in names), prefix
