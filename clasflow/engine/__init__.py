"""Training engine: train, eval and distill stages, checkpoints, schedules and losses."""
