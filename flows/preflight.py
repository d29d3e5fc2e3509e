"""Before a run does any work: every node that runs a stage can write and read the dataset location, and the
process that runs the LLM stages (fusion, QA: the flow's own) can reach the LLM server.

Each node writes a small probe file under ``<dataset>/_preflight/``, reads it back and deletes it. A failure is a
``PreflightError`` that names the node, the location and the cause, raised before any source is downloaded, instead
of a run that decodes for an hour and then cannot commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import socket
import uuid

import httpx

from schemas.store import DatasetStore

PREFLIGHT_DIR = "_preflight"
LLM_TIMEOUT_S = 10.0


class PreflightError(RuntimeError):
    pass


def node_name() -> str:
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            return f"{socket.gethostname()} (Ray node {ctx.get_node_id()[:12]})"
    except Exception:  # noqa: BLE001 — no Ray or no node id: the host name alone
        pass
    return f"{socket.gethostname()} (pid {os.getpid()})"


def check_store(dataset: str) -> str | None:
    """None when this process can write, read back and delete a file in ``dataset``; else what went wrong."""
    node = node_name()
    try:
        store = DatasetStore.of(dataset)
        name = f"{PREFLIGHT_DIR}/{uuid.uuid4().hex}.txt"
        payload = f"saven-vid preflight from {node}\n".encode()
        where = store.url(name)
        store.write_bytes(name, payload)
        back = store.read_bytes(name)
        store.delete(name)
    except Exception as exc:  # noqa: BLE001 — any failure is the finding
        return f"{node}: cannot write and read {dataset!s}: {type(exc).__name__}: {exc}"
    if back != payload:
        return f"{node}: {where} read back different bytes than were written"
    return None


def check_llm(base_url: str, api_key: str = "EMPTY") -> str | None:
    """None when the OpenAI-compatible server at ``base_url`` lists its models; else what went wrong."""
    url = f"{base_url.rstrip('/')}/models"
    try:
        reply = httpx.get(url, timeout=LLM_TIMEOUT_S, headers={"Authorization": f"Bearer {api_key}"})
    except httpx.HTTPError as exc:
        return f"{node_name()}: cannot reach the LLM server at {url}: {type(exc).__name__}: {exc}"
    if reply.status_code != 200:
        return f"{node_name()}: the LLM server at {url} answered HTTP {reply.status_code}: {reply.text[:200]}"
    return None


def check_models(names: list[str], pins: dict[str, str] | None = None) -> str | None:
    """None when every model is in this node's model cache whole (files and sizes as recorded), at the revision
    the profile pins (``pins``: repository -> commit) and its config reads; else what is missing, and the command
    that fetches it."""
    from infra.model_cache import ModelCacheError, hub_folder, prefetched_revision, resolve

    missing = []
    for name in names:
        try:
            folder = Path(resolve(name, recheck=True))  # this process may have checked it before it changed
            for config in ("config.json", "preprocessor_config.json", "open_clip_config.json"):
                if (folder / config).is_file():
                    json.loads((folder / config).read_text())
        except (ModelCacheError, OSError, ValueError) as exc:
            missing.append(f"{name}: {exc}")
            continue
        wanted = (pins or {}).get(name)
        held = prefetched_revision(hub_folder(name)) if wanted else None
        if wanted and held != wanted:
            missing.append(f"{name}: the cache holds revision {str(held)[:12]}, the profile pins {wanted[:12]}: run "
                           f"`saven models prefetch --profile <the profile> --node <this node's type>` on this node")
    if missing:
        return f"{node_name()}: models this node's stages load are not in its model cache: " + "; ".join(missing)
    return None


def models_by_node_type(cfg) -> dict[str, list[str]]:
    """The models each node type loads, by the Ray resource that names it (deploy/ray-cluster.yaml): its stages'
    (``Pipeline.models_by_node``; "" for stages placed on any node), the LLM server's on ``llm`` nodes, the model
    preset's on ``train`` nodes. What ``saven models prefetch --node`` fetches and the preflight checks."""
    from infra.pipeline import Pipeline
    from model.config import preset_config

    out = Pipeline.from_settings(cfg).models_by_node(cfg)
    out.setdefault("llm", []).append(cfg.llm.server.model)
    # the perception stages' model servers that run beside it on the llm nodes (deploy/ray-cluster.yaml)
    out["llm"] += [ep.server.model for _, ep in Pipeline.from_settings(cfg).served_endpoints(cfg).values()
                   if ep.replicas_from_ray and ep.server is not None]
    preset = preset_config(cfg.train.preset)
    out["train"] = [m for m in (preset.vision.name_or_path, preset.audio.name_or_path, preset.llm.name_or_path)
                    if m]
    return out


def _on_node(dataset: str, models: list[str], pins: dict[str, str]) -> str | None:
    return check_store(dataset) or (check_models(models, pins) if models else None)


def preflight(dataset: str, *, llm_base_url: str | list[str] | None, llm_api_key: str = "EMPTY",
              ray_nodes: bool = True, models: dict[str, list[str]] | None = None,
              pins: dict[str, str] | None = None,
              served: dict[str, tuple[list[str], str]] | None = None) -> None:
    """Check the flow's process (dataset, every LLM replica, every replica of ``served``: name -> (URLs, key), the
    perception stages' model servers) and, with Ray up, every alive node that has CPUs
    (the dataset; ``models``: Ray resource name -> model names a node with that resource must hold, "" for every
    node; ``pins``: hub repository -> the revision it must be at)."""
    problems = [check_store(dataset)]
    for url in [llm_base_url] if isinstance(llm_base_url, str) else (llm_base_url or []):
        problems.append(check_llm(url, llm_api_key))
    for name, (urls, key) in (served or {}).items():  # the perception stages' model servers (vlm, omni)
        problems += [p and p.replace("the LLM server", f"the {name} server") for p in (check_llm(u, key) for u in urls)]
    if ray_nodes:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = ray.remote(num_cpus=0, max_retries=0)(_on_node)
        wanted = models or {}
        refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(dataset, sorted({m for key, names in wanted.items() if key == "" or n["Resources"].get(key)
                                         for m in names}), pins or {})
                for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
        problems += ray.get(refs)
    found = [p for p in problems if p]
    if found:
        raise PreflightError("preflight failed, nothing was processed:\n" + "\n".join(f"- {p}" for p in found))
