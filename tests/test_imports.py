"""The package's import contract: light `import ggr_hf`, lazy public classes, Auto registration on use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_data_command_line_does_not_load_torch_or_transformers():
    # `ggr-hf data prepare` builds the whole parser; none of that may pull in the model stack.
    out = _run(
        """
        import sys
        import ggr_hf
        import ggr_hf.cli.data, ggr_hf.data.registry, ggr_hf.data.cache, ggr_hf.data.merrec, ggr_hf.data.ebnerd
        import ggr_hf.data.pixelrec, ggr_hf.data.release
        from ggr_hf.cli import build_parser
        build_parser().parse_args(["data", "prepare", "merrec", "--raw", "r", "--out", "o"])
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
        """
    )
    assert out == "[]"


def test_public_class_access_loads_it_and_registers_the_auto_classes():
    out = _run(
        """
        import ggr_hf
        from ggr_hf import GGRForRecommendation, HSTUConfig
        from transformers import AutoConfig
        from ggr_hf.modeling_ggr import GGRForRecommendation as direct
        assert GGRForRecommendation is direct
        assert "GGRConfig" in dir(ggr_hf)
        print(AutoConfig.for_model("ggr").__class__.__name__, AutoConfig.for_model("hstu").__class__ is HSTUConfig)
        """
    )
    assert out == "GGRConfig True"


def test_unknown_attribute_is_an_attribute_error():
    out = _run(
        """
        import ggr_hf
        try:
            ggr_hf.NotAThing
        except AttributeError as err:
            print(err)
        """
    )
    assert "NotAThing" in out


def test_a_shipped_backbone_type_works_in_a_fresh_process():
    # Nothing imports ggr_hf.models.hllm here: naming backbone_type="hllm" must be enough.
    out = _run(
        """
        from pathlib import Path
        from ggr_hf.configuration_ggr import GGRConfig
        from ggr_hf.experiments.config import load_experiment_config

        cfg = load_experiment_config(Path("recipes/configs/ml100k_hllm_tiny.yaml"))
        print(GGRConfig(num_items=10, **cfg.model).get_backbone_config().__class__.__name__)
        """
    )
    assert out == "HLLMConfig"


def test_import_ggr_hf_then_automodel_loads_a_saved_model(tmp_path):
    # Save in one process, load in a fresh one that only did `import ggr_hf` before transformers.
    _run(
        f"""
        from tests.conftest import tiny_model
        tiny_model([{{"type": "temporal", "segments": 2, "horizon": 2}}]).save_pretrained({str(tmp_path)!r})
        """
    )
    out = _run(
        f"""
        import sys
        import ggr_hf
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        import transformers
        model = transformers.AutoModel.from_pretrained({str(tmp_path)!r})
        print(type(model).__name__, model.head_names)
        """
    )
    assert out == "GGRForRecommendation ['short-term', 'long-term']"


def test_transformers_imported_first_then_ggr_hf_also_registers(tmp_path):
    out = _run(
        """
        import transformers
        import ggr_hf
        print(transformers.AutoConfig.for_model("ggr").__class__.__name__)
        """
    )
    assert out == "GGRConfig"


def test_every_public_model_and_config_class_is_importable_from_ggr_hf():
    out = _run(
        """
        import ggr_hf
        from transformers import PreTrainedModel, PretrainedConfig
        names = [n for n in ggr_hf.__all__ if n != "__version__"]
        kinds = {n: getattr(ggr_hf, n) for n in names}
        models = sorted(n for n, v in kinds.items() if isinstance(v, type) and issubclass(v, PreTrainedModel))
        configs = sorted(n for n, v in kinds.items() if isinstance(v, type) and issubclass(v, PretrainedConfig))
        print(models, configs)
        """
    )
    assert "'GGRForRecommendation'" in out and "'HSTUModel'" in out and "'HLLMModel'" in out
    assert "'GGRConfig'" in out and "'GGRHeadsConfig'" in out and "'HLLMConfig'" in out
