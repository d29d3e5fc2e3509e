"""The one way a stage runs in Ray: a stage function becomes a remote task, a stage class a remote actor
class, each placed with the resources its profile section declares. Stage code itself never imports ray."""

from __future__ import annotations

from typing import Any, Callable

from schemas.settings import Resources


def ray_options(resources: Resources) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.memory_gb:
        opts["memory"] = int(resources.memory_gb * 1024**3)
    if resources.custom:
        opts["resources"] = dict(resources.custom)
    return opts


def demand(resources: Resources) -> dict[str, float]:
    """What one task or actor of ``resources`` takes from a cluster, by Ray resource name."""
    out = {"CPU": resources.num_cpus, "GPU": resources.num_gpus, **resources.custom}
    if resources.memory_gb:
        out["memory"] = resources.memory_gb * 1024**3
    return {k: v for k, v in out.items() if v}


def sets_that_fit(total: dict[str, float], per_set: dict[str, float]) -> int:
    """How many times ``per_set`` fits in ``total`` (0 when a resource it needs is absent)."""
    fits = [int(total.get(k, 0.0) // v) for k, v in per_set.items() if v > 0]
    return min(fits) if fits else 0


def in_ray(stage: Callable | type, resources: Resources, **extra: Any):
    """``stage`` (a function, or a model-holding class whose ``__init__`` loads its model once per actor) as a
    Ray remote with the declared resources; ``extra`` are further Ray options (retries, restarts)."""
    import ray  # heavy: only the code that places stages pays for it

    return ray.remote(**ray_options(resources), **extra)(stage)
