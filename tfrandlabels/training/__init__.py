"""Training: strategies, the distributed custom-loop trainer, checkpoints and resume."""
