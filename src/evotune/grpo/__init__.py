"""GRPO through TRL (`trl`), one module per job: `validate`, `data`, `reward`, `resume` and `trl`
(TRL's trainer, callback and settings; it re-exports the others).

The trainer that runs it is `evotune.trainers.grpo.GRPOTrainer`; TRL itself is imported lazily.
"""
