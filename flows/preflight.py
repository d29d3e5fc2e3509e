"""Before a run does any work: every node that runs a stage can write and read the dataset location, and the
process that runs the LLM stages (fusion, QA: the flow's own) can reach the LLM server.

Each node writes a small probe file under ``<dataset>/_preflight/``, reads it back and deletes it. A failure is a
``PreflightError`` that names the node, the location and the cause, raised before any source is downloaded, instead
of a run that decodes for an hour and then cannot commit.
"""

from __future__ import annotations

import os
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


def _on_node(dataset: str) -> str | None:
    return check_store(dataset)


def preflight(dataset: str, *, llm_base_url: str | None, llm_api_key: str = "EMPTY", ray_nodes: bool = True
              ) -> None:
    """Check the flow's process (dataset and LLM server) and, with Ray up, every alive node that has CPUs."""
    problems = [check_store(dataset)]
    if llm_base_url:
        problems.append(check_llm(llm_base_url, llm_api_key))
    if ray_nodes:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = ray.remote(num_cpus=0, max_retries=0)(_on_node)
        refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(dataset) for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
        problems += ray.get(refs)
    found = [p for p in problems if p]
    if found:
        raise PreflightError("preflight failed, nothing was processed:\n" + "\n".join(f"- {p}" for p in found))
