"""Training: experiment configuration, data sources, EMA, checkpoints and the resumable trainer."""
