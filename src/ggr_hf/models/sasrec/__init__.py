"""The SASRec backbone (Kang & McAuley, 2018): causal softmax self-attention over item embeddings.

`sasrec` is registered with transformers' Auto classes with the other shipped backbones
(`ggr_hf.models.register_backbone_models`), so `GGRConfig(backbone_type="sasrec")` finds it.
"""

from ggr_hf.models.sasrec.configuration_sasrec import SASRecConfig
from ggr_hf.models.sasrec.modeling_sasrec import SASRecModel, SASRecModelOutput, SASRecPreTrainedModel

__all__ = ["SASRecConfig", "SASRecModel", "SASRecModelOutput", "SASRecPreTrainedModel"]
