"""SAVEn-Vid model configuration: plain data, three presets, JSON save/load that are exact inverses.

A preset names every part: the frozen vision and audio encoders, the AVTS resampler's token budget, the LLM and its
LoRA, and the training hyper-parameters of both stages. ``tiny`` is built entirely in code (random init, byte-level
tokenizer) for CPU tests; ``smol`` is the embedded profile (real SmolLM2-135M-Instruct, real EfficientNet-Lite3 frame
features and real Whisper-base audio features, all from the model cache); ``7b`` is the GPU profile (SigLIP-so400m,
Whisper large-v3 encoder, Qwen2.5-7B-Instruct), whose ``arch`` blocks let it also be built with random weights
offline.

Model names: a name with a "/" is a hub id, an existing path is a folder, anything else is a model-cache name
(``infra.model_cache``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.model_cache import ModelCacheError, resolve

CONFIG_FILE = "config.json"


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VisionConfig(_Cfg):
    kind: Literal["siglip", "efficientnet-lite3"] = "siglip"  # a tower in model.encoders.VISION_TOWERS
    name_or_path: str | None = None  # None: random init from ``arch`` (siglip; seeded, so reproducible)
    arch: dict[str, Any] = Field(default_factory=dict)  # SiglipVisionConfig kwargs
    image_size: int = 32
    feature_dim: int = 32  # the tower's hidden size: what the cache holds per token
    pool_grid: int = 2  # patch grid average-pooled to pool_grid x pool_grid tokens per frame
    fallback_fps: float = 0.5  # frames per second decoded from the media when a video has no keyframes
    init_seed: int = 1234


class AudioConfig(_Cfg):
    kind: Literal["hf-whisper", "ct2-whisper"] = "hf-whisper"
    name_or_path: str | None = None  # None: random init from ``arch`` (hf-whisper only)
    arch: dict[str, Any] = Field(default_factory=dict)  # WhisperConfig kwargs
    n_mels: int = 80
    feature_dim: int = 32  # encoder output width
    token_hz: float = 2.0  # encoder frames (50 Hz) average-pooled to this rate before caching
    init_seed: int = 4321


class LoRAConfig(_Cfg):
    r: int = 4
    alpha: int = 8
    dropout: float = 0.0
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])


class LLMConfig(_Cfg):
    name_or_path: str | None = None  # None: random init from ``arch`` with the byte-level tokenizer
    arch: dict[str, Any] = Field(default_factory=dict)  # AutoConfig.for_model kwargs (needs "model_type")
    placeholder_token: str = "<|av|>"
    max_length: int = 512
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    gradient_checkpointing: bool = False


class ResamplerConfig(_Cfg):
    """Token budget: (video_queries + audio_queries + 1) tokens per window of ``window_s`` seconds."""

    window_s: float = 2.0
    max_windows: int = 8  # longer videos get longer windows, so the sequence never exceeds this many
    video_queries: int = 2
    audio_queries: int = 2
    num_heads: int = 4
    max_frames_per_window: int = 4
    max_audio_per_window: int = 16
    time_norm_s: float = 3600.0  # absolute times are divided by this before the TLP

    @property
    def tokens_per_window(self) -> int:
        return self.video_queries + self.audio_queries + 1

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_window / self.window_s


class StageTrainConfig(_Cfg):
    lr: float = 1e-3
    warmup_steps: int = 2
    steps: int = 20


class TrainConfig(_Cfg):
    batch_size: int = 2
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    seed: int = 0
    log_every: int = 1
    save_every: int = 0  # 0: only at the end
    eval_every: int = 0  # held-out loss (and AVBench accuracy, given a bench) every N steps; 0: only at the end
    eval_examples: int = 64  # held-out examples the loss is measured on (the first N; a fixed set across steps)
    keep_last: int = 2
    min_lr_ratio: float = 0.1
    stage1: StageTrainConfig = Field(default_factory=StageTrainConfig)
    stage2: StageTrainConfig = Field(default_factory=lambda: StageTrainConfig(lr=5e-4))

    def stage(self, stage: int) -> StageTrainConfig:
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 (alignment) or 2 (instruction tuning), not {stage!r}")
        return self.stage1 if stage == 1 else self.stage2


class ModelConfig(_Cfg):
    preset: str
    vision: VisionConfig = Field(default_factory=VisionConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    resampler: ResamplerConfig = Field(default_factory=ResamplerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CONFIG_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, folder_or_file: Path) -> "ModelConfig":
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / CONFIG_FILE
        return cls.model_validate_json(path.read_text())


_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny() -> ModelConfig:
    return ModelConfig(
        preset="tiny",
        vision=VisionConfig(arch=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, image_size=32, patch_size=8),
                            image_size=32, feature_dim=32, pool_grid=2),
        audio=AudioConfig(kind="hf-whisper", arch=dict(d_model=32, encoder_layers=2, encoder_attention_heads=4,
                                                       encoder_ffn_dim=64, num_mel_bins=80),
                          n_mels=80, feature_dim=32, token_hz=2.0),
        # A wide init: with the default 0.02 the frozen random lm_head caps every logit near 1, so no adapter
        # could ever make a confident prediction and "loss falls when overfitting" would test nothing.
        llm=LLMConfig(arch=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                tie_word_embeddings=False, initializer_range=0.25),
                      max_length=512, lora=LoRAConfig(r=8, alpha=16, dropout=0.1, target_modules=list(_ALL_LINEAR))),
        resampler=ResamplerConfig(window_s=2.0, max_windows=8, video_queries=2, audio_queries=2, num_heads=4),
        train=TrainConfig(batch_size=2, stage1=StageTrainConfig(lr=1e-2, warmup_steps=2, steps=20),
                          stage2=StageTrainConfig(lr=1e-2, warmup_steps=2, steps=20)),
    )


def _smol() -> ModelConfig:
    return ModelConfig(
        preset="smol",
        # Both frozen encoders are real pretrained networks from the model cache: EfficientNet-Lite3 (ImageNet) for
        # frames, the Whisper-base encoder for audio.
        vision=VisionConfig(kind="efficientnet-lite3", name_or_path="efficientnet-lite3", image_size=280,
                            feature_dim=1280, pool_grid=2),
        audio=AudioConfig(kind="ct2-whisper", name_or_path="whisper-base", n_mels=80, feature_dim=512, token_hz=2.0),
        llm=LLMConfig(name_or_path="smollm2-135m-instruct", max_length=768,
                      lora=LoRAConfig(r=8, alpha=16, dropout=0.05,
                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
        resampler=ResamplerConfig(window_s=2.0, max_windows=16, video_queries=4, audio_queries=4, num_heads=4),
        # The demo run (`make train`, both stages) must stay within a few minutes on 2 CPU cores.
        train=TrainConfig(batch_size=2, stage1=StageTrainConfig(lr=1e-3, warmup_steps=2, steps=12),
                          stage2=StageTrainConfig(lr=3e-4, warmup_steps=2, steps=12)),
    )


def _7b() -> ModelConfig:
    return ModelConfig(
        preset="7b",
        vision=VisionConfig(name_or_path="google/siglip-so400m-patch14-384",
                            arch=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                      num_attention_heads=16, image_size=384, patch_size=14),
                            image_size=384, feature_dim=1152, pool_grid=4, fallback_fps=1.0),
        audio=AudioConfig(kind="hf-whisper", name_or_path="openai/whisper-large-v3",
                          arch=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                                    encoder_ffn_dim=5120, num_mel_bins=128, vocab_size=51866),
                          n_mels=128, feature_dim=1280, token_hz=2.0),
        llm=LLMConfig(name_or_path="Qwen/Qwen2.5-7B-Instruct",
                      arch=dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944,
                                num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6,
                                rms_norm_eps=1e-6, tie_word_embeddings=False),
                      max_length=4096, gradient_checkpointing=True,
                      lora=LoRAConfig(r=16, alpha=32, dropout=0.05,
                                      target_modules=list(_ALL_LINEAR))),
        resampler=ResamplerConfig(window_s=2.0, max_windows=128, video_queries=8, audio_queries=4, num_heads=16,
                                  max_frames_per_window=4, max_audio_per_window=32),
        train=TrainConfig(batch_size=1, grad_accum=8, weight_decay=0.0, precision="auto",
                          stage1=StageTrainConfig(lr=1e-3, warmup_steps=100, steps=5000),
                          stage2=StageTrainConfig(lr=2e-4, warmup_steps=100, steps=10000), save_every=500),
    )


PRESETS = {"tiny": _tiny, "smol": _smol, "7b": _7b}


def preset_config(name: str, **overrides: Any) -> ModelConfig:
    """A fresh config for preset ``name``; ``overrides`` replace top-level sections (validated)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    return cfg.model_validate({**cfg.model_dump(), **overrides}) if overrides else cfg


def model_available(name: str) -> bool:
    """Whether ``name`` resolves to a local folder (``infra.model_cache.resolve``: nothing is downloaded)."""
    try:
        resolve(name)
    except ModelCacheError:
        return False
    return True
