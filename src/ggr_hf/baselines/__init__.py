"""Baseline recommendation models (ComiRec, REMI, DualVAE) on ggr-hf backbones."""
