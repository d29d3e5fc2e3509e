"""The thin Ray layer: a stage function or model-holding class, placed with the resources its config declares."""

from __future__ import annotations

from typing import Any, Callable

import ray

from schemas.settings import Resources


def ray_options(resources: Resources) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.memory_gb:
        opts["memory"] = int(resources.memory_gb * 1024**3)
    return opts


def as_ray_task(fn: Callable, resources: Resources, **extra: Any):
    """``fn`` as a Ray remote function; stage code itself never imports ray."""
    return ray.remote(**ray_options(resources), **extra)(fn)


def as_ray_actor(cls: type, resources: Resources, **extra: Any):
    """A model-holding class as a Ray actor class: its ``__init__`` loads the model once per actor."""
    return ray.remote(**ray_options(resources), **extra)(cls)
