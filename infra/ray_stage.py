"""The one way a stage runs in Ray: a stage function becomes a remote task, a stage class a remote actor
class, each placed with the resources its profile section declares. Stage code itself never imports ray."""

from __future__ import annotations

from typing import Any, Callable

from schemas.settings import Resources


def ray_options(resources: Resources) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.memory_gb:
        opts["memory"] = int(resources.memory_gb * 1024**3)
    return opts


def in_ray(stage: Callable | type, resources: Resources, **extra: Any):
    """``stage`` (a function, or a model-holding class whose ``__init__`` loads its model once per actor) as a
    Ray remote with the declared resources; ``extra`` are further Ray options (retries, restarts)."""
    import ray  # heavy: only the code that places stages pays for it

    return ray.remote(**ray_options(resources), **extra)(stage)
