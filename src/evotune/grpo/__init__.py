"""GRPO through TRL (`trl`): validation, step data, the shared reward path, TRL checkpoints.

The trainer that runs it is `evotune.trainers.grpo.GRPOTrainer`; TRL itself is imported lazily.
"""
