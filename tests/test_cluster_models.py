"""The gpu-cluster profile's models and placement, without the cluster: every model a node type loads is pinned and
has a tiny twin (tests/tiny_models.py); the prefetch puts a pinned revision into the cache from a hub stand-in and
the profile's backends load what it wrote; the LLM server's command line is the profile's; actor replicas follow
the cluster's GPUs. The whole run on three Ray nodes is tests/test_cluster_rehearsal.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fake_hub import FakeHub
from flows.preflight import check_models, models_by_node_type
from flows.placement import actor_counts
from infra import servers
from infra.pipeline import Pipeline
from schemas.settings import load_settings
from tiny_models import TWINS, build_twins

REPO_ROOT = Path(__file__).resolve().parents[1]
PERCEPTION = ["Systran/faster-whisper-large-v3", "MIT/ast-finetuned-audioset-10-10-0.4593"]
# the LLM, the keyframe VLM and the audio-language model: the llm nodes serve all three
LLM_NODE = ["Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-Omni-7B"]


@pytest.fixture(scope="module")
def cluster_cfg():
    return load_settings("gpu-cluster", asr={"device": "cpu", "compute_type": "float32"},
                         visual_captioner={"device": "cpu"})


def test_every_model_a_node_type_loads_is_pinned_and_has_a_twin(cluster_cfg):
    by_type = models_by_node_type(cluster_cfg)
    assert sorted(by_type["perception"]) == sorted(PERCEPTION)
    assert by_type["llm"] == LLM_NODE
    assert "media" not in by_type  # download, decode and cuts load no model
    pins = {m.repo: m.revision for m in cluster_cfg.models}
    loaded = {m for names in by_type.values() for m in names}
    assert loaded == set(pins), loaded ^ set(pins)
    assert all(len(rev) == 40 for rev in pins.values())
    assert set(TWINS) == set(pins)


def test_prefetch_refuses_a_profile_that_loads_an_unpinned_model(tmp_path):
    env = {**os.environ, "SAVEN_MODEL_CACHE": str(tmp_path), "SAVEN_MODELS": "[]"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "models", "prefetch", "--profile", "gpu-cluster",
                           "--node", "llm"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Qwen/Qwen2.5-7B-Instruct" in proc.stdout and "pins no revision" in proc.stdout, proc.stdout
    assert not list(tmp_path.iterdir())


def _prefetch(node: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "models", "prefetch", "--profile", "gpu-cluster",
                           "--node", node], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def check_models_in(cache: Path, names: list[str], pins: dict[str, str] | None = None) -> str | None:
    """``check_models`` against ``cache`` (this process's model cache for the call)."""
    saved = os.environ.get("SAVEN_MODEL_CACHE")
    os.environ["SAVEN_MODEL_CACHE"] = str(cache)
    try:
        return check_models(names, pins)
    finally:
        if saved is None:
            os.environ.pop("SAVEN_MODEL_CACHE", None)
        else:
            os.environ["SAVEN_MODEL_CACHE"] = saved


@pytest.fixture(scope="module")
def perception_cache(tmp_path_factory):
    """The perception and llm nodes' twins prefetched by the CLI, from a hub stand-in, into a cache of their
    own; this process then reads that cache."""
    twins = build_twins(tmp_path_factory.mktemp("twins"), PERCEPTION + LLM_NODE)
    cache = tmp_path_factory.mktemp("cache")
    pins = {m.repo: m.revision for m in load_settings("gpu-cluster").models}
    with FakeHub(twins, commits=pins) as hub:
        env = {**os.environ, "SAVEN_MODEL_CACHE": str(cache), "HF_ENDPOINT": hub.base_url}
        for node in ("perception", "llm", "perception"):  # the second perception prefetch: already there
            asked = len(hub.requests)
            proc = _prefetch(node, env)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert len(hub.requests) == asked  # at the pinned revision already: the hub was not asked again

        # a file gone from a folder at the pinned revision: the prefetch the error names fetches it again
        weights = cache / "hub--MIT--ast-finetuned-audioset-10-10-0.4593" / "model.safetensors"
        weights.unlink()
        assert "model.safetensors" in (check_models_in(cache, ["MIT/ast-finetuned-audioset-10-10-0.4593"]) or "")
        proc = _prefetch("perception", env)
        assert proc.returncode == 0 and weights.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]

        # a pin the hub does not have stops the prefetch, naming the repository; nothing half-written is left
        moved = [{"repo": r, "revision": "1" * 40 if r == "Qwen/Qwen2.5-7B-Instruct" else v} for r, v in pins.items()]
        wrong = {**env, "SAVEN_MODELS": json.dumps(moved)}
        proc = _prefetch("llm", {**wrong, "SAVEN_MODEL_CACHE": str(tmp_path_factory.mktemp("wrong"))})
        assert proc.returncode != 0 and "Qwen/Qwen2.5-7B-Instruct" in proc.stdout + proc.stderr
    saved = os.environ.get("SAVEN_MODEL_CACHE")
    os.environ["SAVEN_MODEL_CACHE"] = str(cache)
    yield cache
    if saved is None:
        os.environ.pop("SAVEN_MODEL_CACHE", None)
    else:
        os.environ["SAVEN_MODEL_CACHE"] = saved


def test_the_profiles_backends_load_the_prefetched_twins(perception_cache, cluster_cfg, shared_media):
    """Whisper large-v3's architecture converted for faster-whisper (batched pipeline, 128 mels), AST on 10.24 s
    windows: each loads and runs through the profile's code path (the keyframe VLM and the audio-language model
    are served: tests/test_media_models_vllm.py, tests/test_cluster_rehearsal.py). The outputs are noise: this
    proves loading and shapes, not quality."""
    from tasks.taggers.transformers_audio import AudioSetTagger
    from tasks.transcribers.whisper import WhisperASR

    assert check_models(PERCEPTION) is None
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 * 12) * 0.1).astype(np.float32)
    transcript = WhisperASR(cluster_cfg.asr).transcribe(audio)
    assert transcript.duration_s == pytest.approx(12.0)
    tagger = AudioSetTagger(cluster_cfg.audio_tagger)
    assert len(tagger.labels) == len(AudioSetTagger.vocabulary(cluster_cfg.audio_tagger)) > 500
    spans = tagger.tag(audio)
    assert all(0 <= s.start_s < s.end_s <= 12.0 for s in spans)


def test_a_missing_file_on_a_node_is_named_with_the_command_that_fetches_it(perception_cache):
    weights = perception_cache / "hub--MIT--ast-finetuned-audioset-10-10-0.4593" / "model.safetensors"
    saved = weights.read_bytes()
    weights.write_bytes(saved[:100])
    try:
        problem = check_models(["MIT/ast-finetuned-audioset-10-10-0.4593"])
    finally:
        weights.write_bytes(saved)
    assert problem and "MIT/ast-finetuned-audioset-10-10-0.4593" in problem and "model.safetensors" in problem
    assert "saven models prefetch" in problem
    assert check_models(["MIT/ast-finetuned-audioset-10-10-0.4593"]) is None


def test_a_node_holding_another_revision_than_the_profile_pins_is_named(perception_cache):
    repo = "MIT/ast-finetuned-audioset-10-10-0.4593"
    pinned = {m.repo: m.revision for m in load_settings("gpu-cluster").models}
    assert check_models([repo], pinned) is None
    problem = check_models([repo], {repo: "2" * 40})  # the profile moved its pin; this node did not prefetch
    assert problem and "the profile pins 222222222222" in problem and pinned[repo][:12] in problem


def test_the_gpu_llm_server_is_the_profiles_prefetched_model_with_one_engine_per_gpu(perception_cache):
    cfg = load_settings("gpu-cluster")
    spec = servers.llm_server_spec(cfg)
    srv = cfg.llm.server
    assert spec.argv[:3] == ["vllm", "serve", str(perception_cache / "hub--Qwen--Qwen2.5-7B-Instruct")]

    def flag(name: str) -> str:
        return spec.argv[spec.argv.index(name) + 1]

    assert flag("--served-model-name") == srv.served_name
    assert flag("--host") == "0.0.0.0" and int(flag("--port")) == srv.port  # the cluster network, by the profile
    assert int(flag("--tensor-parallel-size")) == 1 and int(flag("--data-parallel-size")) == 2
    assert spec.env["HF_HUB_OFFLINE"] == "1"  # it starts from the node's disk
    assert spec.startup_timeout_s >= 600
    # beside it on the node, each on its own GPU and port: the keyframe VLM and the audio-language model
    taken = set(spec.env["CUDA_VISIBLE_DEVICES"].split(","))
    for serves, repo, media in (("vlm", "Qwen/Qwen2.5-VL-7B-Instruct", "image"),
                                ("omni", "Qwen/Qwen2.5-Omni-7B", "audio")):
        side = servers.llm_server_spec(cfg, serves)
        assert side.name == f"{serves}-server" and side.argv[:3] == ["vllm", "serve", str(
            perception_cache / f"hub--{repo.replace('/', '--')}")]
        assert side.argv[side.argv.index("--limit-mm-per-prompt") + 1] == f'{{"{media}": 1}}'
        assert side.argv[side.argv.index("--host") + 1] == "0.0.0.0"
        assert not taken & set(side.env["CUDA_VISIBLE_DEVICES"].split(","))
        taken |= set(side.env["CUDA_VISIBLE_DEVICES"].split(","))
        assert side.health_url.rsplit(":", 1)[1] != spec.health_url.rsplit(":", 1)[1]
    assert taken == {"0", "1", "2", "3"}
    assert servers.served_models(cfg) == ["llm", "vlm", "omni"]
    with pytest.raises(servers.ServerError, match="no 'asr' server"):
        servers.llm_server_spec(cfg, "asr")


def test_actor_replicas_follow_the_perception_gpus_of_the_cluster(cluster_cfg):
    """``replicas: 0``: one ASR and tagger set per GPU of every perception node (their shares add up to one GPU),
    none on the llm nodes' GPUs, capped by ``max_replicas``; the served models' clients, a fixed two each."""
    stages = Pipeline.from_settings(cluster_cfg).of("actor")
    perception = {"CPU": 48, "GPU": 4, "perception": 1000}
    llm = {"CPU": 48, "GPU": 4, "llm": 1}
    media = {"CPU": 32, "media": 32}
    clients = {"visual_caption": 2, "audio_description": 2}
    assert actor_counts(stages, cluster_cfg, [perception, perception, llm, media]) == {
        "asr": 8, "audio_events": 8, **clients}
    assert actor_counts(stages, cluster_cfg, [llm, media]) == {"asr": 1, "audio_events": 1, **clients}
    capped = cluster_cfg.model_copy(update={"asr": cluster_cfg.asr.model_copy(update={
        "resources": cluster_cfg.asr.resources.model_copy(update={"max_replicas": 3})})})
    assert actor_counts(stages, capped, [perception, perception])["asr"] == 3
    # a stage with a fixed count takes its share first: the auto sets fit in what is left
    fixed = cluster_cfg.model_copy(update={"asr": cluster_cfg.asr.model_copy(update={
        "resources": cluster_cfg.asr.resources.model_copy(update={"replicas": 4})})})
    # (4 ASR take 2 of the 4 GPUs: the taggers, half a GPU each, fit 4 times in the rest, not 8)
    assert actor_counts(stages, fixed, [perception]) == {"asr": 4, "audio_events": 4, **clients}
