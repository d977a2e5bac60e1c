"""Training: the optimizer, jitted steps, early-stopped fits of ensembles, checkpoints."""
