"""Scale-out of the ES engine across processes and machines (Ray).

Only seeds, signs and fitness scalars cross the wire: every worker keeps its own model replica
and regenerates the noise from the seeds, so traffic does not grow with model size. Ray is
imported lazily, so the rest of evotune works without it.

`session` starts or joins Ray, `worker` is the replica actor, `ray_evaluator` schedules members on
the replicas and recovers from lost workers.
"""

from evotune.distributed.ray_evaluator import RayEvaluator
from evotune.distributed.session import connect_ray, start_local_ray, threads_per_worker
from evotune.errors import ReplicaMismatchError, WorkerError

__all__ = [
    "RayEvaluator", "ReplicaMismatchError", "WorkerError", "connect_ray", "start_local_ray", "threads_per_worker",
]
