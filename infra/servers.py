"""Local servers the pipeline talks to: the vLLM OpenAI-compatible LLM server and the Prefect API server.

Each runs as its own process group, bound to 127.0.0.1, with its pid and log under the run folder, so that
``stop`` ends exactly the process that ``start`` began (and its children), never a stranger on the same port.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import httpx

from schemas.settings import PROJECT_ROOT, LLMServer, Settings, settings
from infra import model_cache


class ServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerSpec:
    name: str  # "llm-server" or "prefect-server": names the pid/log files and the make targets
    argv: list[str]
    env: dict[str, str]
    health_url: str
    startup_timeout_s: float
    # A server owns its port: a health URL that answers before we start means a stranger holds it. A deployment
    # is not a port: its URL answers whenever it is registered, so it is only checked for readiness.
    exclusive: bool = True
    ready: Callable[[str], bool] | None = None  # default: the health URL answers 200
    # Its children read SAVEN_* settings from the environment it was started with (the deployment's flow runs):
    # a running one started under other settings is not the one asked for.
    inherits_settings: bool = False

    def pid_file(self, run_dir: Path) -> Path:
        return run_dir / f"{self.name}.pid"

    def log_file(self, run_dir: Path) -> Path:
        return run_dir / f"{self.name}.log"


@dataclass(frozen=True)
class RunningServer:
    name: str
    pid: int
    url: str
    log: Path


VLLM_VENV = PROJECT_ROOT / ".venv-vllm"


LLM = "llm"  # what `saven llm-server start` serves without --serves: the fusion and QA LLM


def server_name(serves: str) -> str:
    """Its pid and log files' name: ``llm-server``, ``vlm-server``, ``omni-server``."""
    return f"{serves}-server"


def served_models(cfg: Settings) -> list[str]:
    """What ``saven llm-server start --serves NAME`` can start under this profile: the LLM, and the model servers
    its perception stages send media to (``vlm``, ``omni``) where the profile says how to start them."""
    from infra.pipeline import Pipeline

    return [LLM] + [name for name, (_, ep) in Pipeline.from_settings(cfg).served_endpoints(cfg).items()
                    if ep.server is not None]


def _server_of(cfg: Settings, serves: str) -> tuple[LLMServer, str, bool]:
    """(how to start it, its API key, whether its clients find it through Ray) for the server named ``serves``."""
    if serves == LLM:
        return cfg.llm.server, cfg.llm.api_key.get_secret_value(), cfg.llm.replicas_from_ray
    from infra.pipeline import Pipeline

    endpoints = Pipeline.from_settings(cfg).served_endpoints(cfg)
    if serves not in endpoints or endpoints[serves][1].server is None:
        raise ServerError(f"this profile has no {serves!r} server to start (it can start: "
                          f"{', '.join(served_models(cfg))})")
    endpoint = endpoints[serves][1].keyed_with(cfg.llm.api_key)  # the node's one secret, unless it has its own
    return endpoint.server, endpoint.api_key.get_secret_value(), endpoint.replicas_from_ray


def llm_server_spec(cfg: Settings, serves: str = LLM) -> ServerSpec:
    """How to start the server ``serves`` names: the LLM's (``llm.server``), or a perception stage's model server
    (``visual_captioner.vlm.server``, ``audio_describer.omni.server``)."""
    srv, key, from_ray = _server_of(cfg, serves)
    if srv.kind == "external":
        raise ServerError(f"the {serves} server's kind is 'external': this profile talks to a server it does not "
                          "start")
    keyed = key not in ("", "EMPTY")
    if srv.host not in ("127.0.0.1", "localhost", "::1") and srv.kind == "vllm-cpu" and not (from_ray and keyed):
        # Beyond loopback only for a cluster profile (its clients find the servers on the nodes' addresses), and
        # only behind a key.
        raise ServerError(f"refusing to bind the embedded {serves} server to {srv.host}: use 127.0.0.1 (a cluster "
                          "profile may serve on a node address with llm.api_key set)")
    if srv.kind == "vllm-cpu":
        python = VLLM_VENV / "bin" / "python"
        if not python.exists():
            raise ServerError(f"{python} is missing: run `make vllm-venv` (part of `make setup`)")
        model = model_cache.resolve(srv.model)
        # The `vllm` CLI does not work from the vllm-cpu distribution; the module entry point does.
        argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        # PASSIVE: the server shares cores with the pipeline's perception workers; spinning OpenMP threads at every
        # barrier starve them and, worse, stall the server's own decode steps when a core is taken.
        env = {"VLLM_CPU_KVCACHE_SPACE": str(srv.kv_cache_space_gb), "VLLM_TARGET_DEVICE": "cpu",
               "OMP_WAIT_POLICY": "PASSIVE"}
        if srv.cpu_threads_bind == "all":
            env |= {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, sorted(os.sched_getaffinity(0)))),
                    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
        else:
            env["VLLM_CPU_OMP_THREADS_BIND"] = srv.cpu_threads_bind
        extra = ["--enforce-eager"]
    else:
        # The prefetched folder (`saven models prefetch`): the server starts offline, from this node's disk.
        argv = ["vllm", "serve", model_cache.resolve(srv.model)]
        env = {"CUDA_VISIBLE_DEVICES": srv.gpus} if srv.gpus else {}
        extra = ["--tensor-parallel-size", str(srv.tensor_parallel_size),
                 "--gpu-memory-utilization", str(srv.gpu_memory_utilization)]
        if srv.data_parallel_size > 1:
            extra += ["--data-parallel-size", str(srv.data_parallel_size)]
    argv += ["--served-model-name", srv.served_name, "--host", srv.host, "--port", str(srv.port),
             "--dtype", srv.dtype, "--max-model-len", str(srv.max_model_len), *extra, *srv.extra_args]
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1"})
    if keyed:  # vLLM then refuses /v1 requests without it; in the environment, not the command line (ps, pid file)
        env["VLLM_API_KEY"] = key
    return ServerSpec(server_name(serves), argv, env, f"http://{srv.host}:{srv.port}/health", srv.startup_timeout_s)


def prefect_env(cfg: Settings) -> dict[str, str]:
    """What every process that talks to our Prefect server needs (flows, workers, Ray workers)."""
    return {
        "PREFECT_HOME": str(cfg.paths.run_dir / "prefect"),
        "PREFECT_API_URL": cfg.prefect.api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": cfg.prefect.host,
        "PREFECT_SERVER_API_PORT": str(cfg.prefect.port),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def prefect_server_spec(cfg: Settings) -> ServerSpec:
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect), "server", "start", "--host", cfg.prefect.host, "--port", str(cfg.prefect.port),
            "--no-ui"]
    return ServerSpec("prefect-server", argv, prefect_env(cfg), f"{cfg.prefect.api_url}/health",
                      cfg.prefect.startup_timeout_s)


def deployment_server_spec(cfg: Settings, name: str = "local") -> ServerSpec:
    """The process that serves the build-dataset deployment; healthy once the deployment is registered."""
    argv = [sys.executable, "-m", "flows.serve", name]
    env = {**prefect_env(cfg), "PYTHONPATH": str(PROJECT_ROOT), "SAVEN_PROFILE": cfg.profile}
    return ServerSpec("deployment-server", argv, env, f"{cfg.prefect.api_url}/deployments/name/build-dataset/{name}",
                      cfg.prefect.startup_timeout_s, exclusive=False, ready=_deployment_ready, inherits_settings=True)


def _deployment_ready(url: str) -> bool:
    """Registered and polled by a runner (Prefect marks a served deployment READY while its runner polls)."""
    try:
        reply = httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200 and reply.json().get("status") == "READY"


def _read_pid(pid_file: Path) -> int | None:
    try:
        return json.loads(pid_file.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def is_running(spec: ServerSpec, run_dir: Path) -> bool:
    """Whether the process our pid file names is alive (it may still be starting)."""
    pid = _read_pid(spec.pid_file(run_dir))
    return bool(pid and _alive(pid))


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def start(spec: ServerSpec, run_dir: Path) -> RunningServer:
    """Start the server unless ours is already up; wait until its health URL answers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    pid_file, log = spec.pid_file(run_dir), spec.log_file(run_dir)
    pid = _read_pid(pid_file)
    if pid and _alive(pid):
        started_as = _started_as(pid_file)
        if started_as is not None and started_as != _identity(spec):
            raise ServerError(f"our {spec.name} (pid {pid}) runs with another command line or SAVEN_* settings than "
                              f"this one asks for (e.g. another model): stop it with `"
                              + (_STOP_COMMANDS.get(spec.name) or f"make {_STOP_TARGETS.get(spec.name)}") + "` first")
        if _wait_healthy(spec, pid, log, timeout=spec.startup_timeout_s):
            return RunningServer(spec.name, pid, spec.health_url, log)
    if spec.exclusive and healthy(spec.health_url):
        raise ServerError(f"{spec.health_url} already answers but not from our {spec.name} (pid file {pid_file}); "
                          "stop that server or change the port in the config")
    env = {**os.environ, **spec.env}
    with open(log, "ab") as log_f:
        proc = subprocess.Popen(spec.argv, stdout=log_f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=PROJECT_ROOT, start_new_session=True)
    pid_file.write_text(json.dumps({"pid": proc.pid, "url": spec.health_url, **_identity(spec)}))
    if not _wait_healthy(spec, proc.pid, log, timeout=spec.startup_timeout_s):
        stop(spec, run_dir)
        raise ServerError(f"{spec.name} did not become healthy within {spec.startup_timeout_s:.0f} s; "
                          f"last log lines:\n{_tail(log)}")
    return RunningServer(spec.name, proc.pid, spec.health_url, log)


_STOP_TARGETS = {"llm-server": "llm-server-stop", "prefect-server": "prefect-server-stop",
                 "deployment-server": "serve-stop"}
_STOP_COMMANDS = {"vlm-server": "saven llm-server stop --serves vlm",
                  "omni-server": "saven llm-server stop --serves omni"}


def _identity(spec: ServerSpec) -> dict:
    """What makes a running server the one asked for: its command line and the settings its children inherit. The
    settings are kept as a digest: a value may be a secret (an API key, a proxy with credentials), and the pid file
    is a plain file."""
    saven_env = {k: v for k, v in sorted(os.environ.items())
                 if k.startswith("SAVEN_")} if spec.inherits_settings else {}
    digest = hashlib.sha256(json.dumps(saven_env, sort_keys=True).encode()).hexdigest()
    return {"argv": spec.argv, "saven_env_sha256": digest, "saven_env_names": sorted(saven_env)}


def _started_as(pid_file: Path) -> dict | None:
    try:
        record = json.loads(pid_file.read_text())
        return {"argv": record["argv"], "saven_env_sha256": record["saven_env_sha256"],
                "saven_env_names": record["saven_env_names"]}
    except (OSError, ValueError, KeyError):
        return None  # written by an older version: nothing to compare


def _wait_healthy(spec: ServerSpec, pid: int, log: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise ServerError(f"{spec.name} (pid {pid}) exited during start-up; last log lines:\n{_tail(log)}")
        if (spec.ready or healthy)(spec.health_url):
            return True
        time.sleep(1.0)
    return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(spec: ServerSpec, run_dir: Path, timeout: float = 30.0) -> bool:
    """Stop exactly the process group recorded in the pid file. True when something was stopped."""
    pid_file = spec.pid_file(run_dir)
    pid = _read_pid(pid_file)
    if pid is None:
        return False
    stopped = False
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.3)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


def start_llm_server(cfg: Settings | None = None, serves: str = LLM) -> RunningServer:
    cfg = cfg or settings()
    return start(llm_server_spec(cfg, serves), cfg.paths.run_dir)


# The embedded model whose QA text passes the checks for every type (`make models`), the local-cpu profile's own
# since 2026-12-03. A profile serving another model (SmolLM2-135M for speed, say) gets it as a side server where a
# test or the fault run needs grounded QA.
GROUNDED_QA_MODEL = "qwen2.5-0.5b-instruct"


def side_llm_server(cfg: Settings, model: str, name: str = "llm-server-qa") -> tuple[ServerSpec, str]:
    """A second embedded LLM server serving ``model`` beside the profile's: the next port, its own pid and log
    files (``name``). Returns the spec and its base URL; clients name the model ``model``."""
    srv = cfg.llm.server.model_copy(update={"model": model, "served_name": model, "port": cfg.llm.server.port + 1})
    spec = llm_server_spec(cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"server": srv})}))
    return replace(spec, name=name), f"http://{srv.host}:{srv.port}/v1"


def grounded_qa_server(cfg: Settings) -> tuple[ServerSpec, str] | None:
    """A side server of ``GROUNDED_QA_MODEL`` when it is installed and the profile's server does not already serve
    it; None otherwise (then the profile's server is the one to use)."""
    if cfg.llm.server.model == GROUNDED_QA_MODEL:
        return None
    try:
        model_cache.verify(GROUNDED_QA_MODEL, deep=False)
    except model_cache.ModelCacheError:
        return None
    return side_llm_server(cfg, GROUNDED_QA_MODEL)


def stop_llm_server(cfg: Settings | None = None, serves: str = LLM) -> bool:
    cfg = cfg or settings()
    if serves not in served_models(cfg):
        raise ServerError(f"this profile has no {serves!r} server (it has: {', '.join(served_models(cfg))})")
    return stop(_spec_for_stop(server_name(serves), cfg), cfg.paths.run_dir)


def start_prefect_server(cfg: Settings | None = None) -> RunningServer:
    cfg = cfg or settings()
    (cfg.paths.run_dir / "prefect").mkdir(parents=True, exist_ok=True)
    return start(prefect_server_spec(cfg), cfg.paths.run_dir)


def stop_prefect_server(cfg: Settings | None = None) -> bool:
    cfg = cfg or settings()
    return stop(_spec_for_stop("prefect-server", cfg), cfg.paths.run_dir)


def start_deployment_server(cfg: Settings | None = None) -> RunningServer:
    cfg = cfg or settings()
    return start(deployment_server_spec(cfg), cfg.paths.run_dir)


def stop_deployment_server(cfg: Settings | None = None) -> bool:
    cfg = cfg or settings()
    return stop(_spec_for_stop("deployment-server", cfg), cfg.paths.run_dir)


def _spec_for_stop(name: str, cfg: Settings) -> ServerSpec:
    # Stopping needs only the pid file, not a buildable command line (the model may since have been removed).
    return ServerSpec(name, [], {}, "", 0.0)
