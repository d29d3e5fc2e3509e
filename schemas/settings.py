"""Typed settings: one YAML profile from ``configs/`` plus environment overrides.

Precedence (highest first): keyword arguments, environment (``SAVEN_`` prefix, ``__`` between nested keys,
e.g. ``SAVEN_LLM__BASE_URL``), the profile YAML, the defaults below. The profile is chosen by
``SAVEN_PROFILE`` (default ``local-cpu``); ``SAVEN_CONFIG`` points at any other YAML file.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from schemas.records import QAType

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "configs"
DEFAULT_PROFILE = "local-cpu"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Paths(Section):
    run_dir: Path = PROJECT_ROOT / ".run"  # pids, logs, server state
    output_dir: Path = PROJECT_ROOT / "out"  # samples, datasets, checkpoints, reports
    model_cache: Path = Path(os.environ.get("SAVEN_MODEL_CACHE", Path.home() / ".cache" / "saven-vid" / "models"))
    # Where each node does a video's media work (download, decode, keyframes) before its files go to the dataset.
    # None: a local dataset's own folder (files land where they belong, as they always did); for an object-store
    # dataset, the system temp folder. Each Ray node works in its own subfolder ("node-<id>").
    scratch_dir: Path | None = None


class HubModel(Section):
    """A model the profile loads from the Hugging Face Hub, at a pinned commit (``saven models prefetch`` puts it
    into the model cache before a run; runs never download)."""

    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = Field(pattern=r"^[0-9a-f]{40}$")  # a commit, never a branch: the same bytes on every node
    allow_patterns: list[str] = Field(default_factory=list)  # only these files (empty: all)


class Resources(Section):
    num_cpus: float = 1.0
    num_gpus: float = 0.0  # a fraction shares a GPU between actors of small models (Ray does not cap their memory)
    memory_gb: float | None = None
    # Ray custom resources of a node type (deploy/ray-cluster.yaml): {"perception": 1} keeps the stage on the
    # perception nodes, whatever GPUs the LLM nodes have free.
    custom: dict[str, float] = Field(default_factory=dict)
    # Actors of a model-holding stage (each loads the model once): a number, or 0 for as many as the cluster holds,
    # one per share of what the auto-counted actor stages ask for together (one ASR and tagger set per GPU share),
    # up to max_replicas, counted again before each batch as the autoscaler adds nodes.
    replicas: int = Field(default=1, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)


class LLMServer(Section):
    """How ``saven llm-server`` starts the OpenAI-compatible server this profile talks to."""

    kind: Literal["vllm-cpu", "vllm-gpu", "external"] = "vllm-cpu"
    model: str = "qwen2.5-0.5b-instruct"  # a model-cache name, or a hub name for vllm-gpu
    served_name: str = "qwen2.5-0.5b-instruct"
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str = "bfloat16"
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1  # engines behind one endpoint (vLLM's data parallel: one per GPU of a node)
    gpu_memory_utilization: float = 0.90
    kv_cache_space_gb: int = 2  # VLLM_CPU_KVCACHE_SPACE on the CPU backend
    # VLLM_CPU_OMP_THREADS_BIND on the CPU backend. vLLM's "auto" keeps one core for the HTTP frontend, which on a
    # 2-core machine halves decode speed; "all" binds every core this process may run on and reserves none.
    cpu_threads_bind: str = "auto"
    extra_args: list[str] = Field(default_factory=list)
    startup_timeout_s: float = 300.0
    # CUDA_VISIBLE_DEVICES of a vllm-gpu server: the node's GPUs it takes, where several servers share a node (the
    # LLM, the VLM and the audio-language model of the gpu-cluster profile's llm nodes). None: every GPU.
    gpus: str | None = None


class LLM(Section):
    base_url: str | None = None  # default: the server above
    # Several OpenAI-compatible servers of the same model: the client spreads requests over them (fewest in flight
    # first) and steps around one that stops answering. Explicit URLs, or (on a Ray cluster) every alive node with
    # the `llm` resource on server.port, found at the start of a run.
    replicas: list[str] = Field(default_factory=list)
    replicas_from_ray: bool = False
    api_key: SecretStr = SecretStr("EMPTY")  # never printed: repr, logs, run artifacts and pid files show ******
    model: str | None = None  # default: server.served_name
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 4
    temperature: float = 0.2
    frequency_penalty: float = 0.0  # small models loop ("The dog is playing. The dog is playing."); this curbs it
    max_tokens: int = 768
    seed: int = 0
    server: LLMServer = Field(default_factory=LLMServer)

    @property
    def resolved_base_url(self) -> str:
        return self.base_url or f"http://{self.server.host}:{self.server.port}/v1"

    @property
    def endpoints(self) -> list[str]:
        """Every server the client talks to: the replicas, or the one base URL."""
        return list(self.replicas) or [self.resolved_base_url]

    @property
    def resolved_model(self) -> str:
        return self.model or self.server.served_name


class PrefectServer(Section):
    host: str = "127.0.0.1"
    port: int = 4200
    startup_timeout_s: float = 120.0

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"


class RayCfg(Section):
    address: str | None = None  # None: start a local Ray; "auto" or ray://... for a cluster
    num_cpus: int | None = None
    include_dashboard: bool = False
    # Batches of videos processed at once by a flow run: with 2, one batch's LLM phase (fusion, QA) overlaps the
    # next one's decoding and perception instead of waiting for it.
    batches_in_flight: int = Field(default=2, ge=1)


class Acquire(Section):
    max_duration_s: float = 4 * 3600
    max_filesize_mb: float = 4096
    max_height: int = 720
    playlist_cap: int = 50
    cookies_file: Path | None = None
    rate_limit: str | None = None  # e.g. "2M"
    sleep_interval_s: float = 0.0
    proxy: SecretStr | None = None  # may hold credentials (http://user:pass@host): a secret, never printed
    # Refuse sources, playlist entries and resolved media URLs on loopback, private, link-local (the cloud's
    # metadata service at 169.254.169.254) or other non-public addresses. On in the gpu-cluster profile; off here,
    # where the tests' servers are on loopback.
    block_private_networks: bool = False
    retries: int = 3
    backoff_s: float = 2.0  # first wait between retries of a transient failure; grows exponentially
    socket_timeout_s: float = 30.0
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0.5))


class Segment(Section):
    detector: str = "adaptive"  # a registered scene detector (tasks.scene_detectors)
    adaptive_threshold: float = 3.0
    content_threshold: float = 27.0
    min_scene_len_frames: int = 8
    # The cut detector's frames: 64 px wide (video2dataset's analysis width) sampled with swscale's 2-tap
    # fast_bilinear (what PySceneDetect's own downscale does): same cuts as 320 px on the samples' truth and the
    # shared media, 0.6x the CPU (README, "Performance"). The decode of every frame is the rest of the cost.
    analysis_width: int = 64
    analysis_scaler: Literal["fast_bilinear", "bilinear", "area"] = "fast_bilinear"
    min_clip_s: float = 2.0
    max_clip_s: float = 30.0
    keyframes_per_clip: int = 3
    keyframe_width: int = 448
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=1.0))


class ASR(Section):
    kind: str = "faster-whisper"  # a registered transcriber (tasks.transcribers)
    model: str = "whisper-base"  # a model-cache name, or a faster-whisper size/hub name on the GPU profile
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    beam_size: int = 5
    batched: bool = False
    batch_size: int = 8
    vad: bool = True
    word_timestamps: bool = True
    cpu_threads: int = 2
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=1.0))


class AudioTagger(Section):
    kind: str = "yamnet"  # a registered audio tagger (tasks.taggers)
    model: str | None = None  # a transformers model name or path for audioset/clap
    labels: list[str] = Field(default_factory=list)  # zero-shot vocabulary for clap
    # yamnet: also the signal analyser's descriptors (voice pitch, tempo, tone frequency, noise colour, mood cues)
    signal_measures: bool = True
    window_s: float = 1.0  # what a window tagger hears at once (AST was trained on 10.24 s)
    # With a hop, windows of window_s every hop_s each label the hop_s at their centre: the model hears what it was
    # trained on, the labels keep hop_s resolution. None: windows side by side.
    hop_s: float | None = Field(default=None, gt=0)
    # Seconds of audio per call, cut on clip bounds: memory stays bounded on long videos (0 = the whole audio).
    chunk_s: float = 600.0
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=1.0))


class ModelEndpoint(Section):
    """A model on OpenAI-compatible servers (vLLM) that a perception stage sends media to: one base URL, or replicas
    found at the start of a run (every alive Ray node with the `llm` resource, on ``server.port``), requests going
    round them. ``server``: how ``saven llm-server start --serves NAME`` starts it on a node (NAME: the field that
    holds this endpoint, ``vlm`` or ``omni``)."""

    base_url: str = "http://127.0.0.1:8101/v1"  # not 8001: a profile's side LLM server takes the LLM's port + 1
    model: str = ""  # the served name
    # None: the LLM's key (``llm.api_key``, filled in by ``Settings``): an llm node's servers share its one secret.
    api_key: SecretStr | None = None
    replicas: list[str] = Field(default_factory=list)
    replicas_from_ray: bool = False
    server: LLMServer | None = None
    max_tokens: int = Field(default=160, ge=16)
    concurrency: int = Field(default=8, ge=1)  # requests in flight per worker (the servers batch them)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)

    @property
    def endpoints(self) -> list[str]:
        """Every server the client talks to: the replicas, or the one base URL."""
        return list(self.replicas) or [self.base_url]

    def keyed_with(self, key: SecretStr) -> "ModelEndpoint":
        """This endpoint with ``key`` where it names none of its own."""
        return self if self.api_key is not None else self.model_copy(update={"api_key": key})


class VLMEndpoint(ModelEndpoint):
    """A vision-language model (vLLM serving Qwen2.5-VL / Qwen3-VL): the ``vlm`` visual captioner's."""

    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    max_tokens: int = Field(default=160, ge=16)  # an objective description: a few sentences
    max_side: int = Field(default=768, ge=64)  # keyframes larger than this are scaled down before sending


class OmniEndpoint(ModelEndpoint):
    """An audio-language model (vLLM serving Qwen2.5-Omni / Qwen3-Omni's thinker, or Qwen2-Audio): the ``omni``
    audio describer's."""

    base_url: str = "http://127.0.0.1:8102/v1"
    model: str = "Qwen/Qwen2.5-Omni-7B"
    max_tokens: int = Field(default=256, ge=32)  # five short fields of JSON
    max_clip_s: float = Field(default=30.0, gt=0)  # a longer clip is heard from its start (Qwen2.5-Omni: 30 s/part)


class AudioDescriber(Section):
    """The optional stage that has a model listen to each clip and describe it on the paper's five axes
    (``tasks.audio_description``); its text replaces the tagger's labels on those axes of the audio caption."""

    enabled: bool = False
    kind: str = "omni"  # a registered audio describer (tasks.audio_describers)
    omni: OmniEndpoint = Field(default_factory=OmniEndpoint)
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0.5))


class VisualCaptioner(Section):
    kind: str = "object-detector"  # a registered visual captioner (tasks.captioners)
    vlm: VLMEndpoint = Field(default_factory=VLMEndpoint)
    coca_model: str = "coca_ViT-L-14"
    coca_pretrained: str | None = "mscoco_finetuned_laion2b_s13b_b90k"
    clip_model: str = "ViT-L-14"
    clip_pretrained: str | None = "laion2b_s32b_b82k"
    labels: list[str] = Field(default_factory=list)
    device: str = "cpu"
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=1.0))


class QAOptions(Section):
    """How the QA stage asks (``tasks.qa``); the profile's ``qa:`` section, the flow's parameters override it."""

    # How many questions a video gets scales with what it holds: at least ``questions_per_type`` of each type its
    # facts allow, and as many in all as ``questions_per_clip`` per clip and ``questions_per_minute`` per minute ask
    # (the larger), spread over those types, at most ``max_questions_per_video``.
    # planned: code plans every question from the facts, the LLM phrases it. authored: the LLM writes the types it
    # can (every type without a time anchor: tasks.qa_author) from the video's timeline, code checks them and an LLM
    # judge says which senses each needs; the anchored types stay planned, so their times are exact.
    mode: Literal["planned", "authored"] = "planned"
    judge: bool = True  # authored mode: the visual-only / audio-only judge (two requests per accepted item)
    questions_per_type: int = Field(default=1, ge=1)
    questions_per_clip: float = Field(default=0.5, ge=0)
    questions_per_minute: float = Field(default=2.0, ge=0)
    max_questions_per_video: int = Field(default=60, ge=1)
    attempts_per_type: int = Field(default=3, ge=1)  # rounds: each asks again for a type still short of questions
    types: list[QAType] = Field(default_factory=lambda: list(QAType))
    # Cards per request: the system prompt and the reply's JSON frame are paid once per request, and requests in
    # flight keep a CPU server's decode batch full; a failed request loses all its cards.
    questions_per_request: int = Field(default=5, ge=1, le=16)
    tokens_per_question: int = Field(default=64, ge=16)  # the reply's max_tokens is this per card (+16)


class Compaction(Section):
    """Merging the per-video shards of committed videos into size-bounded ones (``schemas.compaction``)."""

    enabled: bool = True
    target_mb: float = Field(default=256.0, gt=0)  # size of a compacted shard
    row_group_rows: int = Field(default=100_000, ge=1000)
    min_loose_files: int = Field(default=2000, ge=1)  # finalize compacts once this many small files gathered


class Dedup(Section):
    """Deduplication after download (``tasks.dedup``): thresholds in Hamming bits of 64-bit keyframe dHashes."""

    enabled: bool = True
    video_max_distance: float = Field(default=6.0, ge=0, le=64)  # median keyframe distance of a re-encode
    clip_max_distance: float = Field(default=2.0, ge=0, le=64)  # a clip repeating footage already kept
    duration_tolerance: float = Field(default=0.03, ge=0)  # a copy's duration within 3% of the kept one's
    min_keyframes: int = Field(default=2, ge=1)


class Train(Section):
    """How `saven train` / `make train` train SAVEn-Vid on this profile's machines."""

    preset: str = "smol"  # model.config presets: tiny, smol, 7b
    # Processes on this machine: 1 trains in this process; more start `torchrun --standalone --nproc_per_node N`
    # (one per GPU; DDP, NCCL on GPUs, gloo on CPUs). Several machines: deploy/train.sh on each.
    nproc_per_node: int = Field(default=1, ge=0)  # 0: one per GPU this machine has (1 without GPUs)


class Lease(Section):
    """One writer at a time per dataset (``schemas.lease``): how long a lease lives without renewal."""

    ttl_s: float = Field(default=120.0, gt=0)
    renew_every_s: float = Field(default=30.0, gt=0)


class Benchmark(Section):
    """The AVBench held-out split; training excludes the same videos."""

    heldout_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    split_salt: str = "avbench-heldout-v1"
    # At least this many QA items held out when the dataset has them (training keeps one video with questions):
    # the hash alone can hold out one short video of a small dataset (schemas.split.HeldOut).
    min_heldout_items: int = Field(default=0, ge=0)


class Demo(Section):
    """What `make demo` changes from the profile: a better LLM for QA text, more questions for AVBench."""

    llm_model: str | None = None  # a model-cache name served instead of llm.server.model; None: the profile's
    # How many questions a video gets scales with what it holds: at least ``questions_per_type`` of each type its
    # facts allow, and as many in all as ``questions_per_clip`` per clip and ``questions_per_minute`` per minute ask
    # (the larger), spread over those types, at most ``max_questions_per_video``.
    # planned: code plans every question from the facts, the LLM phrases it. authored: the LLM writes the types it
    # can (every type without a time anchor: tasks.qa_author) from the video's timeline, code checks them and an LLM
    # judge says which senses each needs; the anchored types stay planned, so their times are exact.
    mode: Literal["planned", "authored"] = "planned"
    judge: bool = True  # authored mode: the visual-only / audio-only judge (two requests per accepted item)
    questions_per_type: int = Field(default=1, ge=1)
    questions_per_clip: float = Field(default=0.5, ge=0)
    questions_per_minute: float = Field(default=2.0, ge=0)
    max_questions_per_video: int = Field(default=60, ge=1)


# The built-in pipeline, in order (``infra.pipeline``): media stages in one Ray task per source, perception in
# actors, code over their rows, then the LLM stages.
DEFAULT_PIPELINE = ("acquire", "probe", "audio", "segment", "fingerprint", "dedup", "asr", "audio_events",
                    "visual_caption", "audio_description", "audio_caption", "fuse", "qa")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAVEN_", env_nested_delimiter="__", extra="forbid")

    @model_validator(mode="after")
    def _served_models_share_the_llm_key(self) -> "Settings":
        """A perception model server's endpoint with no key of its own takes the LLM's: an llm node's servers share
        the node's one secret (deploy/ray-cluster.yaml), so every client of them holds it, resolved once here."""
        key = self.llm.api_key
        self.visual_captioner.vlm = self.visual_captioner.vlm.keyed_with(key)
        self.audio_describer.omni = self.audio_describer.omni.keyed_with(key)
        return self

    profile: str = DEFAULT_PROFILE
    # The hub models this profile's stages, LLM server and model preset load, pinned (``saven models prefetch``).
    models: list[HubModel] = Field(default_factory=list)
    pipeline: list[str] = Field(default_factory=lambda: list(DEFAULT_PIPELINE))  # stage names, in order
    # The sections of stages added to the pipeline, by section name (each validated by its stage's ``config``).
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    paths: Paths = Field(default_factory=Paths)
    llm: LLM = Field(default_factory=LLM)
    prefect: PrefectServer = Field(default_factory=PrefectServer)
    ray: RayCfg = Field(default_factory=RayCfg)
    acquire: Acquire = Field(default_factory=Acquire)
    segment: Segment = Field(default_factory=Segment)
    asr: ASR = Field(default_factory=ASR)
    audio_tagger: AudioTagger = Field(default_factory=AudioTagger)
    visual_captioner: VisualCaptioner = Field(default_factory=VisualCaptioner)
    audio_describer: AudioDescriber = Field(default_factory=AudioDescriber)
    qa: QAOptions = Field(default_factory=QAOptions)
    compaction: Compaction = Field(default_factory=Compaction)
    dedup: Dedup = Field(default_factory=Dedup)
    lease: Lease = Field(default_factory=Lease)
    train: Train = Field(default_factory=Train)
    benchmark: Benchmark = Field(default_factory=Benchmark)
    demo: Demo = Field(default_factory=Demo)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=config_file()))


PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def secret_setting_env(model: type[BaseModel] | None = None, prefix: str = "SAVEN_") -> set[str]:
    """The environment names of every secret setting (``SecretStr`` fields: ``SAVEN_LLM__API_KEY``, ...): what may
    never travel where it would be shown, such as a Ray job's runtime environment."""
    out = set()
    for name, field in (model or Settings).model_fields.items():
        kinds = [field.annotation, *getattr(field.annotation, "__args__", ())]
        if SecretStr in kinds:
            out.add(f"{prefix}{name.upper()}")
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                out |= secret_setting_env(kind, f"{prefix}{name.upper()}__")
    return out


def config_file(profile: str | None = None) -> Path:
    """The YAML of ``profile`` (a name of ``configs/``), or of ``SAVEN_CONFIG`` (a path the user set) when no
    profile is asked for. A profile is a name, never a path: a flow parameter cannot point at another file."""
    explicit = os.environ.get("SAVEN_CONFIG")
    if explicit and profile is None:
        return Path(explicit)
    name = profile or os.environ.get("SAVEN_PROFILE", DEFAULT_PROFILE)
    if not PROFILE_NAME.fullmatch(name):
        raise ValueError(f"a profile is a name from {CONFIG_DIR} (letters, digits, '-', '_'), not {name!r}")
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no config profile {name!r} ({path}); known profiles: {', '.join(known)}")
    return path


def load_settings(profile: str | None = None, **overrides) -> Settings:
    """Settings for ``profile`` (default: $SAVEN_PROFILE or local-cpu) with env and keyword overrides."""
    if profile is not None:
        previous = os.environ.get("SAVEN_PROFILE"), os.environ.pop("SAVEN_CONFIG", None)
        os.environ["SAVEN_PROFILE"] = profile
        try:
            return Settings(**overrides)
        finally:
            if previous[0] is None:
                os.environ.pop("SAVEN_PROFILE", None)
            else:
                os.environ["SAVEN_PROFILE"] = previous[0]
            if previous[1] is not None:
                os.environ["SAVEN_CONFIG"] = previous[1]
    return Settings(**overrides)


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings (cached; tests call ``settings.cache_clear()`` after changing env)."""
    return load_settings()
