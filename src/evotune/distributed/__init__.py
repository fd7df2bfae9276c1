"""Scale-out of the ES engine across processes and machines (Ray).

Only seeds, signs and fitness scalars cross the wire: every worker keeps its own model replica
and regenerates the noise from the seeds, so traffic does not grow with model size. Ray is
imported lazily, so the rest of evotune works without it.
"""

from evotune.distributed.ray_evaluator import (
    RayEvaluator,
    start_local_ray,
)
from evotune.errors import ReplicaMismatchError, WorkerError

__all__ = ["RayEvaluator", "ReplicaMismatchError", "WorkerError", "start_local_ray"]
