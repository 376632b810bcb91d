"""Zero-shot evaluation of FCN-LLM on unseen cohorts, next to supervised baselines and the oracle."""
