"""Session fixtures: the real servers the tests talk to, started once through the same code as `make`."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests build tiny datasets of one or two videos: AVBench's held-out split (a third of the videos in the
# local-cpu profile) would leave them nothing to train on. Tests of the split set the fraction explicitly.
os.environ.setdefault("SAVEN_BENCHMARK__HELDOUT_FRACTION", "0.0")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = (REPO_ROOT / ".." / "shared" / "media").resolve()


@dataclass(frozen=True)
class LLMEndpoint:
    base_url: str
    model: str


@pytest.fixture(scope="session")
def shared_media() -> Path:
    if not SHARED_MEDIA.is_dir():
        pytest.fail(f"real test media missing: {SHARED_MEDIA} (shared/ must sit beside the checkout)")
    return SHARED_MEDIA


@pytest.fixture(scope="session")
def llm_server():
    """The real vLLM CPU server (reused when `make llm-server` already runs it; stopped only if we started it)."""
    from infra import servers
    from schemas.settings import settings

    cfg = settings()
    spec = servers.llm_server_spec(cfg)
    was_running = servers.is_running(spec, cfg.paths.run_dir)  # someone else's: leave it running
    servers.start(spec, cfg.paths.run_dir)
    yield LLMEndpoint(cfg.llm.resolved_base_url, cfg.llm.resolved_model)
    if not was_running:
        servers.stop(spec, cfg.paths.run_dir)


@pytest.fixture(scope="session")
def qa_llm_server(llm_server):
    """The server of the grounded QA model: the profile's own when it serves it (local-cpu does), else a side
    server beside the profile's."""
    from infra import servers
    from schemas.settings import settings

    cfg = settings()
    grounded = servers.grounded_qa_server(cfg)
    if grounded is None:
        yield llm_server
        return
    spec, base_url = grounded
    was_running = servers.is_running(spec, cfg.paths.run_dir)
    servers.start(spec, cfg.paths.run_dir)
    yield LLMEndpoint(base_url, servers.GROUNDED_QA_MODEL)
    if not was_running:
        servers.stop(spec, cfg.paths.run_dir)


@pytest.fixture(scope="session")
def prefect_server():
    """The real Prefect API server; sets PREFECT_API_URL/PREFECT_HOME for this process."""
    from infra import servers
    from schemas.settings import settings

    cfg = settings()
    spec = servers.prefect_server_spec(cfg)
    was_running = servers.is_running(spec, cfg.paths.run_dir)
    servers.start_prefect_server(cfg)
    saved = {k: os.environ.get(k) for k in spec.env}
    os.environ.update(spec.env)
    yield cfg.prefect.api_url
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if not was_running:
        servers.stop(spec, cfg.paths.run_dir)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 API server (moto) on loopback with a bucket; this process's environment points at it (pyarrow,
    boto3 and the Ray workers started from here read AWS_ENDPOINT_URL and the test credentials)."""
    from s3_server import MotoS3

    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log").start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    server.bucket = server.create_bucket("saven-test")
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="module")
def two_node_cluster():
    """Head and worker node as separate raylets (ray.cluster_utils stops exactly the processes it started)."""
    from ray.cluster_utils import Cluster

    from ray_cluster import DASHBOARD_PORT, TwoNodes

    # The dashboard (job API) listens on loopback only. The nodes keep Ray's own node address: each node's
    # dashboard agent reaches the GCS at the address Ray resolves for the machine, so pinning 127.0.0.1 leaves the
    # agents unconnected and no job can be submitted ("No available agent").
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": DASHBOARD_PORT})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    yield TwoNodes(f"http://127.0.0.1:{DASHBOARD_PORT}", cluster.address)
    cluster.shutdown()


# -- a loopback web server of media files (acquisition and trust tests) ------------------------------------------------

class _MediaHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``/flaky/<name>`` answers ``fail_status`` ``fail_count`` times before serving ``<name>``."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.requests[self.path] += 1
            count = srv.requests[self.path]
        if self.path.startswith("/flaky/"):
            if count <= srv.fail_count:
                self.send_error(srv.fail_status, "try later")
                return
            self.path = self.path[len("/flaky"):]
        super().do_GET()

    def do_HEAD(self) -> None:
        with self.server.lock:
            self.server.requests["HEAD " + self.path] += 1
        super().do_HEAD()


@pytest.fixture()
def server(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_MediaHandler, directory=str(www)))
    httpd.requests, httpd.lock, httpd.fail_count, httpd.fail_status = Counter(), threading.Lock(), 0, 429
    httpd.www = www
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
