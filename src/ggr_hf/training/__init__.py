"""The training loop (`ggr_hf.training.loop.train`) and its settings (`GGRTrainingArguments`).

Knows nothing of data-set names, priors or model cards: `ggr_hf.experiments` wires those.
"""
