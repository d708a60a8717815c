"""Training: the train loop and step, optimiser recipes, data parallelism over devices
and hosts, Orbax checkpoints (resume, best, fine-tuning) and the workdir (config, scalars,
learning curves)."""
