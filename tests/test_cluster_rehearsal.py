"""The gpu-cluster profile's first run, rehearsed on this machine: the cluster's own steps and code paths, with tiny
random-init twins of the very architectures the profile pins (``tests/tiny_models.py``) in place of their weights.

1. Each node type prefetches what its stages load with ``saven models prefetch --profile gpu-cluster --node TYPE``
   into its own model cache, from a loopback stand-in for the Hugging Face Hub (``tests/fake_hub.py``: the client,
   its requests and the checks on the files are real; the hub is not).
2. The llm node starts its servers with ``saven llm-server start [--serves vlm|omni]`` (the real vLLM OpenAI server,
   CPU build) on the prefetched folders, as deploy/ray-cluster.yaml does: the LLM, the keyframe VLM and the
   audio-language model. vLLM's CPU build cannot serve Qwen2.5-VL or Qwen2.5-Omni (torchvision): their twins are
   Idefics3 and Qwen2-Audio, the closest architectures it serves through the same requests (tests/tiny_models.py).
3. A Ray cluster of three nodes whose resources mirror deploy/ray-cluster.yaml: media (the head here), perception
   (a GPU Ray counts but this machine does not have: the fractional GPU requests are placed exactly as on the
   cluster) and llm, each with its own model cache; they share nothing but Ray and a real S3 API (moto).
4. The build is submitted as a Ray job (deploy/submit_job.py) with the profile; the flow finds the LLM replica
   through Ray, the preflight checks every node's models, every stage runs where the profile puts it, and the
   dataset lands in the bucket and reads back valid. A run killed with SIGKILL after its first commit resumes to
   the same dataset.

What differs from the cluster, and only that (``CPU_REHEARSAL_ENV``): devices are CPUs (``cpu``, float32), the LLM
server is vLLM's CPU build on this machine's node address, replies are capped at 256 tokens (a random model never
closes its JSON). What it proves: the plumbing (weights to nodes, every model started through the profile's code
paths, placement, the LLM service found and checked, failure rows, resume). What it cannot: quality (the twins write
noise, so no question lands), speed, CUDA, NCCL, GPU memory.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from ray.util import get_node_ip_address

from fake_hub import FakeHub
from flow_runs import killed_run_resumes_to_the_same_dataset, prompt_tokens, scene_video
from ray_cluster import submit_when_agent_ready
from tiny_models import build_twins

from flows.llm_cache import SHARD_DIR
from schemas.commit import committed
from schemas.manifest import verify_manifest
from schemas.records import ALL_RECORDS, VIDEO_TABLES
from schemas.settings import load_settings
from schemas.shards import read_records
from schemas.store import DatasetStore
from tasks import fuse

pytestmark = [pytest.mark.flow, pytest.mark.llm, pytest.mark.prefect, pytest.mark.slow, pytest.mark.cluster]
REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILE = "gpu-cluster"
NODE_TYPES = ("media", "perception", "llm")
DASHBOARD_PORT = 8298
LLM_PORT, VLM_PORT, OMNI_PORT = 8012, 8014, 8015
# The address Ray gives this machine's nodes: the llm node's server listens there, as a cluster's does on its node
# (the profile's 0.0.0.0 would also listen on every other interface of this machine).
NODE_IP = get_node_ip_address()
# The LLM servers' key: on a node address vLLM answers only with it. Like the cluster's secrets it is in the nodes'
# own environment (the llm node's server, the head's job driver), never in a job's.
LLM_KEY_ENV = {"SAVEN_LLM__API_KEY": secrets.token_hex(16)}
# Everything the rehearsal changes in the profile: what a CPU machine cannot do as the cluster does.
CPU_REHEARSAL_ENV = {
    "SAVEN_ASR__DEVICE": "cpu", "SAVEN_ASR__COMPUTE_TYPE": "float32",
    "SAVEN_VISUAL_CAPTIONER__DEVICE": "cpu",
    "SAVEN_LLM__SERVER__KIND": "vllm-cpu", "SAVEN_LLM__SERVER__HOST": NODE_IP,
    "SAVEN_LLM__SERVER__PORT": str(LLM_PORT), "SAVEN_LLM__SERVER__DTYPE": "float32",
    "SAVEN_LLM__MAX_TOKENS": "256",
    **{f"SAVEN_{section}__SERVER__{k}": v for section, port in (("VISUAL_CAPTIONER__VLM", VLM_PORT),
                                                                ("AUDIO_DESCRIBER__OMNI", OMNI_PORT))
       for k, v in {"KIND": "vllm-cpu", "HOST": NODE_IP, "PORT": str(port), "DTYPE": "float32",
                    "MAX_MODEL_LEN": "2048", "KV_CACHE_SPACE_GB": "1"}.items()},
    # The served perception models' replies are not cached like the LLM's (their clients run on the perception
    # nodes): a resumed video is heard and seen again. One request at a time from one client each, so that the
    # twins' noise repeats exactly on the resumed run (a server's batch changes its float sums, and noise logits
    # are close enough to flip); short replies, so that the CPU decodes them in minutes.
    "SAVEN_VISUAL_CAPTIONER__VLM__CONCURRENCY": "1", "SAVEN_VISUAL_CAPTIONER__RESOURCES__REPLICAS": "1",
    "SAVEN_AUDIO_DESCRIBER__OMNI__CONCURRENCY": "1", "SAVEN_AUDIO_DESCRIBER__RESOURCES__REPLICAS": "1",
    "SAVEN_VISUAL_CAPTIONER__VLM__MAX_TOKENS": "32", "SAVEN_AUDIO_DESCRIBER__OMNI__MAX_TOKENS": "96",
}


def _saven(args: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _node_env(root: Path, node: str) -> dict[str, str]:
    """A node's own disk: its model cache and its run folder (pid and log files)."""
    env = {k: v for k, v in os.environ.items() if k != "SAVEN_MODEL_CACHE"}
    return {**env, "SAVEN_PROFILE": PROFILE, "SAVEN_MODEL_CACHE": str(root / node / "models"),
            "SAVEN_PATHS__RUN_DIR": str(root / node / "run"), **CPU_REHEARSAL_ENV, **LLM_KEY_ENV}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    pins = {m.repo: m.revision for m in load_settings(PROFILE).models}
    server = FakeHub(build_twins(tmp_path_factory.mktemp("twins"), list(pins)), commits=pins).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, hub):
    """Step 1: every node type prefetches what it loads, as its start commands in deploy/ray-cluster.yaml do."""
    root = tmp_path_factory.mktemp("nodes")
    fetched = {}
    for node in NODE_TYPES:
        env = {**_node_env(root, node), "HF_ENDPOINT": hub.base_url}
        proc = _saven(["models", "prefetch", "--node", node], env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        fetched[node] = sorted(p.name for p in (root / node / "models").glob("hub--*"))
    assert fetched == {
        "media": [],
        "perception": ["hub--MIT--ast-finetuned-audioset-10-10-0.4593", "hub--Systran--faster-whisper-large-v3"],
        "llm": ["hub--Qwen--Qwen2.5-7B-Instruct", "hub--Qwen--Qwen2.5-Omni-7B", "hub--Qwen--Qwen2.5-VL-7B-Instruct"]
    }, fetched
    # at the pinned revisions, and nothing but those: a second prefetch asks the hub for nothing
    asked = len(hub.requests)
    again = _saven(["models", "prefetch", "--node", "perception"], {**_node_env(root, "perception"),
                                                                   "HF_ENDPOINT": hub.base_url})
    assert again.returncode == 0 and len(hub.requests) == asked, hub.requests[asked:]
    # each folder's marker records the pinned revision it was fetched at (the hub stand-in has no other)
    pins = {m.repo: m.revision for m in load_settings(PROFILE).models}
    for node, folders in fetched.items():
        for folder in folders:
            marker = json.loads((root / node / "models" / folder / ".complete.json").read_text())
            assert marker["revision"] == pins[marker["repo"]], marker
    return root


@pytest.fixture(scope="module")
def llm_node_server(nodes):
    """Step 2: the llm node's vLLM server, started by the command its node start runs."""
    env = _node_env(nodes, "llm")
    proc = _saven(["llm-server", "start"], env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    base = f"http://{NODE_IP}:{LLM_PORT}/v1"
    assert httpx.get(f"{base}/models", timeout=10).status_code == 401  # on a node address: nothing without the key
    yield base
    _saven(["llm-server", "stop"], env)


@pytest.fixture(scope="module")
def media_node_servers(nodes):
    """Step 2, continued: the llm node's VLM and audio-language model servers, by the commands its node start runs."""
    env = _node_env(nodes, "llm")
    urls = {}
    for serves, port in (("vlm", VLM_PORT), ("omni", OMNI_PORT)):
        proc = _saven(["llm-server", "start", "--serves", serves], env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        urls[serves] = f"http://{NODE_IP}:{port}/v1"
        assert httpx.get(f"{urls[serves]}/models", timeout=10).status_code == 401  # the node's key guards it too
    yield urls
    for serves in urls:
        _saven(["llm-server", "stop", "--serves", serves], env)


@pytest.fixture(scope="module")
def cluster(nodes, llm_node_server, media_node_servers):
    """Step 3: three Ray nodes with the cluster's node types' resources, each with its own model cache."""
    from ray.cluster_utils import Cluster

    def node(name: str) -> dict:
        return {"env_vars": {"SAVEN_MODEL_CACHE": str(nodes / name / "models"), **LLM_KEY_ENV}}

    ray_cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"media": 4}, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": DASHBOARD_PORT, **node("media")})
    # ASR 0.5 + tagger 0.5 GPU and 2 CPUs each: one set fits this node, on GPU 0; and the served models' clients,
    # a CPU apiece
    perception = ray_cluster.add_node(num_cpus=8, num_gpus=1, resources={"perception": 1000}, **node("perception"))
    llm = ray_cluster.add_node(num_cpus=1, resources={"llm": 1}, **node("llm"))
    ray_cluster.wait_for_nodes()
    ray_cluster.node_types = {ray_cluster.head_node.node_id[:12]: "media", perception.node_id[:12]: "perception",
                              llm.node_id[:12]: "llm"}
    yield ray_cluster
    ray_cluster.shutdown()


def test_the_gpu_cluster_profile_runs_on_three_node_types_and_a_killed_run_resumes(
        cluster, llm_node_server, media_node_servers, s3, prefect_server, shared_media, tmp_path):
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_tasks

    sources = tmp_path / "sources.yaml"
    scene_video(tmp_path / "scenes.mp4")
    sources.write_text(yaml.safe_dump([str(tmp_path / "scenes.mp4"), str(shared_media / "chaplin.mp4"),
                                       str(shared_media / "jfk.flac")]))  # jfk: no video stream, a dead letter
    dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
    uri = f"{s3.bucket}/rehearsal-{uuid.uuid4().hex[:8]}"
    scratch = {"SAVEN_PATHS__SCRATCH_DIR": str(tmp_path / "scratch")}  # /scratch is the cluster's instance disk
    overrides = [a for k, v in {**CPU_REHEARSAL_ENV, **scratch}.items() for a in ("--env", f"{k}={v}")]
    tokens_before = prompt_tokens(llm_node_server)
    media_before = {name: prompt_tokens(url) for name, url in media_node_servers.items()}

    # Step 4: the job, as the runbook submits it.
    proc = submit_when_agent_ready([
        sys.executable, str(REPO_ROOT / "deploy" / "submit_job.py"), "submit", "--address", dashboard,
        "--sources", str(sources), "--output", uri, "--profile", PROFILE, "--batch-size", "2",
        "--prefect-api-url", prefect_server, "--working-dir", str(REPO_ROOT), "--python", sys.executable, "--wait",
        *overrides])
    logs = JobSubmissionClient(dashboard).get_job_logs(proc.stdout.split()[0]) if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    summary = json.loads(next(line for line in logs.splitlines()[::-1] if line.startswith('{"dataset"')))
    job = JobSubmissionClient(dashboard).get_job_info(proc.stdout.split()[0])
    assert LLM_KEY_ENV["SAVEN_LLM__API_KEY"] not in logs + json.dumps(job.runtime_env)  # the key stayed on the nodes

    # The LLM replica was found through Ray (the llm node, on the profile's port) and checked before any download;
    # fusion's requests reached it.
    assert f"Servers (replicas, requests spread over them): `{llm_node_server}`" in logs, logs[-4000:]
    assert prompt_tokens(llm_node_server) > tokens_before, logs[-6000:]
    # so were the keyframe VLM's and the audio-language model's, and the keyframes and clips reached them
    for name, url in media_node_servers.items():
        assert f"{name} servers: `{url}`" in " ".join(logs.split()), logs[-4000:]  # the report, wrapped
        assert prompt_tokens(url) > media_before[name], (name, logs[-6000:])

    # Every stage ran on the node type the profile puts it on: media tasks on media, perception actors on the
    # perception node's GPU (shares of GPU 0), the driver stages in the job's driver on the head.
    types = cluster.node_types
    media_nodes = {types[t.node_id[:12]] for t in list_tasks(address=dashboard, limit=10000)
                   if t.name == "media_task" and t.node_id}
    assert media_nodes == {"media"}, media_nodes
    placed = {w["stage"]: (types.get(w["node"]), w["gpus"], w["node_type"]) for w in summary["workers"]}
    for stage in ("asr", "audio_events"):
        assert placed[stage] == ("perception", ["0"], "perception"), placed
    for stage in ("visual_caption", "audio_description"):  # clients of the llm node's servers: no GPU of their own
        assert placed[stage] == ("perception", [], "perception"), placed
    for stage in ("dedup", "audio_caption"):  # and the LLM stages' clients, which have no worker of their own
        assert placed[stage][0] == "media", placed  # the head, where the job's driver runs
    assert "## Workers" in logs and "perception (" in logs  # the run report says where each stage ran

    # The dataset is in the bucket and reads back valid: both videos with their perception rows (no speech: a tone,
    # noise and a silent film), the audio-only file a dead letter. The twin LLM's replies are noise that never
    # parses, so each clip's description is the one fusion writes from the perception facts, under that name.
    assert verify_manifest(uri) == []
    assert sorted(Path(m.source).name for m in committed(uri).values()) == ["chaplin.mp4", "scenes.mp4"]
    rows = {table: read_records(uri, table, ALL_RECORDS[table]) for table in VIDEO_TABLES}
    for table in ("videos", "clips", "audio_events", "visual_captions", "audio_captions", "fingerprints"):
        assert rows[table], f"no {table} row landed"
    # every clip heard by the audio-language model: five axes, or the clip's dead letter saying why not (the twin's
    # noise under the JSON schema may run to its token limit); none transient, so both videos committed
    store = DatasetStore.of(uri)
    dead = pq.read_table(pa.BufferReader(store.read_bytes("dead_letter.parquet"))).to_pylist()
    described = {r.clip_id for r in rows["audio_descriptions"]}
    unheard = {d["item_id"] for d in dead if d["stage"] == "audio_description"}
    assert described | unheard == {c.clip_id for c in rows["clips"]}, (described, unheard)
    assert all(w["videos"] == 2 for w in summary["workers"] if w["stage"] == "asr")
    assert sorted(d.clip_id for d in rows["descriptions"]) == sorted(c.clip_id for c in rows["clips"])
    assert {d.model for d in rows["descriptions"]} == {fuse.FACTS_MODEL}, rows["descriptions"]
    assert "no_video_stream" in {d["error_class"] for d in dead}
    assert all(d["stage"] and d["error_class"] and d["message"] for d in dead), dead
    assert store.list_files(SHARD_DIR, suffix=".parquet")
    card = store.read_text("README.md")
    assert "Systran/faster-whisper-large-v3" in card and "`Qwen/Qwen2.5-7B-Instruct` (served as" in card, card
    # the training node's copy (runbook step 7): the dataset whole in a local folder, verified by its manifest
    pulled = _saven(["pull", uri, str(tmp_path / "pulled")], {**os.environ})
    assert pulled.returncode == 0, pulled.stdout[-2000:] + pulled.stderr[-2000:]
    assert "manifest verified" in " ".join(pulled.stdout.split()) and verify_manifest(tmp_path / "pulled") == []

    # Kill -9 after the first commit, then resume, against a second prefix that starts with the first run's LLM
    # cache shards: the resumed run asks the LLM nothing and its dataset equals the first by content.
    again = f"{s3.bucket}/resumed-{uuid.uuid4().hex[:8]}"
    env = {**{k: v for k, v in os.environ.items() if k != "SAVEN_MODEL_CACHE"}, "RAY_ADDRESS": cluster.address,
           "PREFECT_API_URL": prefect_server, "SAVEN_PROFILE": PROFILE, **CPU_REHEARSAL_ENV, **LLM_KEY_ENV,
           **scratch}
    cmd = [sys.executable, "-m", "flows.cli", "build", "--sources", str(sources), "--output", again,
           "--profile", PROFILE, "--batch-size", "1", "--batches-in-flight", "1"]
    killed_run_resumes_to_the_same_dataset(uri, again, cmd, env, llm_node_server, REPO_ROOT)


def test_a_node_without_its_models_stops_the_run_before_any_download(cluster, nodes, s3, prefect_server, tmp_path,
                                                                     shared_media):
    """The preflight checks each node for the models its stages load: with one file of the perception node's
    Whisper gone, the run names the node, the model and the command that fetches it, and downloads nothing."""
    model = nodes / "perception" / "models" / "hub--Systran--faster-whisper-large-v3" / "model.bin"
    saved = model.read_bytes()
    model.unlink()
    try:
        sources = tmp_path / "sources.yaml"
        sources.write_text(yaml.safe_dump([str(shared_media / "chaplin.mp4")]))
        env = {**{k: v for k, v in os.environ.items() if k != "SAVEN_MODEL_CACHE"}, "RAY_ADDRESS": cluster.address,
               "PREFECT_API_URL": prefect_server, "SAVEN_PROFILE": PROFILE, **CPU_REHEARSAL_ENV, **LLM_KEY_ENV,
               "SAVEN_PATHS__SCRATCH_DIR": str(tmp_path / "scratch")}
        run = subprocess.run([sys.executable, "-m", "flows.cli", "build", "--sources", str(sources), "--output",
                              f"{s3.bucket}/missing-{uuid.uuid4().hex[:8]}", "--profile", PROFILE], env=env,
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    finally:
        model.write_bytes(saved)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "preflight failed, nothing was processed" in out, out[-3000:]
    assert "Systran/faster-whisper-large-v3" in out and "saven models prefetch" in out, out[-3000:]
    perception = next(n for n, t in cluster.node_types.items() if t == "perception")
    named = {x.split("Ray node ", 1)[1][:12] for x in out.splitlines()
             if "faster-whisper-large-v3" in x and "Ray node " in x}
    assert named == {perception}, out[-3000:]  # the node that lacks it, and only that one
    assert not list((tmp_path / "scratch").glob("node-*/work-*"))
