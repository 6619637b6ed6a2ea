"""Training: the resumable training loop, the classifier stages, checkpoints."""
