"""Where a run's stages go on the cluster: the media task's resources, how many actors each actor stage gets for
the nodes alive now, which type each node is, and the labels a stage can name read on the node type that holds
its model. Placement only: what runs where, never what it does (``flows.video_pipeline``)."""

from __future__ import annotations

import ray

from infra.pipeline import Pipeline
from infra.ray_stage import demand, sets_that_fit
from infra.stage import Stage
from schemas.settings import Resources, Settings
from tasks.grounding import nameable_words


def media_resources(pipeline: Pipeline, settings: Settings) -> Resources:
    """The media task holds the most any of its stages declares (the decode dominates: segment's), on the node type
    they name."""
    declared = [s.resources(settings) for s in pipeline.of("media")] or [Resources()]
    custom: dict[str, float] = {}
    for r in declared:
        for k, v in r.custom.items():
            custom[k] = max(custom.get(k, 0.0), v)
    return Resources(num_cpus=max(r.num_cpus for r in declared), num_gpus=max(r.num_gpus for r in declared),
                     memory_gb=max((r.memory_gb or 0 for r in declared), default=0) or None, custom=custom)


def actor_counts(stages: list[type[Stage]], settings: Settings, nodes: list[dict[str, float]]) -> dict[str, int]:
    """Actors per actor stage: its ``replicas`` when set; for ``replicas: 0``, as many sets of the auto stages as
    the alive ``nodes`` (each one's Ray resources) hold, node by node (one ASR and tagger per GPU share of a
    perception node), at least one and at most each stage's ``max_replicas``. Ray places each actor where its
    resources are free; a set that fits nowhere would wait, so none is asked for."""
    fixed = {s.name: s.resources(settings).replicas for s in stages if s.resources(settings).replicas > 0}
    auto = [s for s in stages if s.name not in fixed]
    free = [dict(node) for node in nodes]
    for s in stages:  # the fixed actors first, each where it fits: the auto sets get what they leave
        need = demand(s.resources(settings))
        for _ in range(fixed.get(s.name, 0)):
            node = next((n for n in free if sets_that_fit(n, need)), None)
            for k, v in need.items() if node is not None else ():
                node[k] -= v
    per_set: dict[str, float] = {}
    for s in auto:
        for k, v in demand(s.resources(settings)).items():
            per_set[k] = per_set.get(k, 0.0) + v
    sets = max(1, sum(sets_that_fit(node, per_set) for node in free)) if auto else 0
    counts = dict(fixed)
    for s in auto:
        cap = s.resources(settings).max_replicas
        counts[s.name] = min(sets, cap) if cap else sets
    return counts


RAY_BUILTIN_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory"}


def node_types() -> dict[str, str]:
    """Short node id -> its custom resources (``perception``, ``llm``, ...: the node types of
    deploy/ray-cluster.yaml), for reports that say where work ran."""
    def custom(resources: dict) -> str:
        return ",".join(sorted(k for k in resources if k not in RAY_BUILTIN_RESOURCES
                               and not k.startswith(("node:", "accelerator_type:"))))

    return {n["NodeID"][:12]: custom(n.get("Resources", {})) for n in ray.nodes()}


def _stage_vocabulary(stage: type[Stage], settings: Settings) -> list[str]:
    return list(stage.vocabulary(settings))


def placed_vocabulary(pipeline: Pipeline, settings: Settings) -> frozenset[str]:
    """``tasks.grounding.run_vocabulary``, each stage's labels read where its models are: an AudioSet tagger's class
    names are its model's config, which only the nodes of its type hold (the head prefetches no model)."""
    labels: set[str] = set()
    refs = []
    for stage in pipeline.stages:
        custom = stage.resources(settings).custom
        if custom and stage.models(settings) and ray.is_initialized():
            where = {next(iter(custom)): 0.001}  # a sliver of the node type's resource: it runs beside the stages
            refs.append(ray.remote(num_cpus=0, resources=where, max_retries=0)(_stage_vocabulary)
                        .remote(stage, settings))
        else:
            labels.update(stage.vocabulary(settings))
    for found in ray.get(refs):
        labels.update(found)
    return nameable_words(labels)
