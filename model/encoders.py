"""The frozen encoders: a vision tower over sampled frames and an audio encoder over 16 kHz log-mel windows.

Vision towers are registered by ``VisionConfig.kind`` in ``VISION_TOWERS``: ``siglip`` (a pretrained SigLIP, or a
seeded random init for the tiny test preset) and ``efficientnet-lite3`` (the ImageNet-trained int8 network the
model cache holds; its last 9x9x1280 feature map, average-pooled, is the embedded ``smol`` preset's real vision
features). ``vision_tower(cfg)`` builds the one the config names.

Both only ever run without gradients, once per video, in the feature step (``model.features``); training reads
their cached outputs. A random-init encoder (tiny and smol vision, tiny audio) is built under a fixed seed so the
same config always gives the same weights; its ``fingerprint`` (a digest of the weights) is stored with the cached
features and in checkpoints, so features from another encoder are refused instead of silently mixed.

Audio follows Whisper: log-mel over 30 s windows (3000 frames), encoder output at 50 Hz, then average-pooled to
``token_hz`` tokens per second. ``ct2-whisper`` runs the real CTranslate2 Whisper encoder (faster-whisper), which is
not a torch module at all: that is fine because nothing downstream needs its gradients.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from infra.registry import Registry
from infra.model_cache import resolve as resolve_model
from model.config import AudioConfig, VisionConfig
from schemas.handoff import SAMPLE_RATE

MEL_FRAMES = 3000  # one Whisper window: 30 s at 100 frames/s
ENCODER_HZ = 50.0  # Whisper's encoder halves the mel frame rate
SIGLIP_MEAN = SIGLIP_STD = 0.5


@contextmanager
def seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


VISION_TOWERS: Registry[type] = Registry("vision tower")


def vision_tower(cfg: VisionConfig, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The tower ``cfg.kind`` names: ``encode(rgb frames) -> [N, pool_grid**2, feature_dim]``, ``fingerprint``."""
    return VISION_TOWERS.get(cfg.kind)(cfg, device, dtype)


@VISION_TOWERS.register("siglip")
class VisionTower:
    """SigLIP vision tower (pretrained or seeded random init); frames -> [N, pool_grid**2, feature_dim]."""

    def __init__(self, cfg: VisionConfig, device: str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import SiglipVisionConfig, SiglipVisionModel

        self.cfg, self.device, self.dtype = cfg, device, dtype
        if cfg.name_or_path:
            self.model = SiglipVisionModel.from_pretrained(resolve_model(cfg.name_or_path), dtype=dtype)
            self.fingerprint = f"pretrained:{cfg.name_or_path}"
        else:
            with seeded(cfg.init_seed):
                self.model = SiglipVisionModel(SiglipVisionConfig(**cfg.arch))
            self.fingerprint = f"random:{fingerprint(self.model)}"
        if self.model.config.hidden_size != cfg.feature_dim:
            raise ValueError(f"vision tower width {self.model.config.hidden_size} != feature_dim {cfg.feature_dim}")
        _freeze(self.model).to(device, dtype)

    def preprocess(self, frames: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 HxWx3 frames -> normalised [N, 3, S, S] (SigLIP's processor: resize, scale, mean/std 0.5)."""
        size = self.cfg.image_size
        batch = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in frames])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
        return (x - SIGLIP_MEAN) / SIGLIP_STD

    @torch.no_grad()
    def encode(self, frames: list[np.ndarray], batch_size: int = 16) -> torch.Tensor:
        if not frames:
            return torch.zeros(0, self.cfg.pool_grid**2, self.cfg.feature_dim)
        out = []
        for i in range(0, len(frames), batch_size):
            x = self.preprocess(frames[i:i + batch_size]).to(self.device, self.dtype)
            h = self.model(pixel_values=x).last_hidden_state  # [n, P, D], P = a square patch grid
            g = math.isqrt(h.shape[1])
            h = h.transpose(1, 2).reshape(h.shape[0], h.shape[2], g, g).float()
            h = F.adaptive_avg_pool2d(h, self.cfg.pool_grid).flatten(2).transpose(1, 2)
            out.append(h.cpu())
        return torch.cat(out)


@VISION_TOWERS.register("efficientnet-lite3")
class EfficientNetLite3Tower:
    """EfficientNet-Lite3 (ImageNet, int8 TFLite, model cache ``efficientnet-lite3``) as a frozen vision tower.

    A frame is resized to the network's 280x280 RGB input; the head's Relu6 feature map ([9, 9, 1280], before the
    global pool and the classifier) is dequantised and average-pooled to ``pool_grid`` x ``pool_grid`` tokens of
    1280. The TFLite interpreter keeps intermediate tensors only when asked (``experimental_preserve_all_tensors``),
    which costs a few MB on a network this size. The fingerprint is the weights file's sha256.
    """

    FEATURE_TENSOR = "efficientnet-lite3/model/head/Relu6"

    def __init__(self, cfg: VisionConfig, device: str = "cpu", dtype: torch.dtype = torch.float32):
        import warnings

        from ai_edge_litert.interpreter import Interpreter

        from schemas.store import sha256_file

        self.cfg = cfg
        path = Path(resolve_model(cfg.name_or_path or "efficientnet-lite3")) / "efficientnet_lite3.tflite"
        with warnings.catch_warnings():  # "for debugging purposes only": the one tensor read is what is wanted
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True)
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        (self.feature,) = [d for d in self.interpreter.get_tensor_details()
                           if d["name"].startswith(self.FEATURE_TENSOR) and len(d["shape"]) == 4]
        width = int(self.feature["shape"][-1])
        if width != cfg.feature_dim:
            raise ValueError(f"efficientnet-lite3 features are {width} wide, config feature_dim is {cfg.feature_dim}")
        self.size = int(self.inp["shape"][1])
        self.fingerprint = f"pretrained:efficientnet-lite3:{sha256_file(path)[:16]}"

    def feature_map(self, rgb: np.ndarray) -> np.ndarray:
        """[9, 9, 1280] float32 of one RGB uint8 frame."""
        x = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)
        self.interpreter.set_tensor(self.inp["index"], x[None].astype(np.uint8))
        self.interpreter.invoke()
        q = self.interpreter.get_tensor(self.feature["index"])[0].astype(np.float32)
        scale, zero = self.feature["quantization"]
        return (q - zero) * scale

    @torch.no_grad()
    def encode(self, frames: list[np.ndarray], batch_size: int = 16) -> torch.Tensor:
        g = self.cfg.pool_grid
        if not frames:
            return torch.zeros(0, g * g, self.cfg.feature_dim)
        maps = torch.from_numpy(np.stack([self.feature_map(f) for f in frames])).permute(0, 3, 1, 2)
        return F.adaptive_avg_pool2d(maps, g).flatten(2).transpose(1, 2).contiguous()


AUDIO_TOWERS: Registry[type] = Registry("audio tower")


def audio_tower(cfg: AudioConfig, device: str = "cpu", dtype: torch.dtype = torch.float32, cpu_threads: int = 0):
    """The Whisper encoder ``cfg.kind`` names: ``encode(16 kHz wave) -> (tokens, centre seconds)``, ``fingerprint``."""
    return AUDIO_TOWERS.get(cfg.kind)(cfg, device, dtype, cpu_threads)


class AudioEncoder:
    """Whisper encoder over 30 s log-mel windows -> ([N, feature_dim] tokens at token_hz, [N] centre seconds).
    Subclasses load the encoder and run one batch of windows (``_encode_windows``)."""

    def __init__(self, cfg: AudioConfig, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 cpu_threads: int = 0):
        from faster_whisper.feature_extractor import FeatureExtractor

        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.mel = FeatureExtractor(feature_size=cfg.n_mels)
        self.pool = max(1, round(ENCODER_HZ / cfg.token_hz))

    def _encode_windows(self, mel: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def log_mel_windows(self, wave: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """[W, n_mels, 3000] padded windows and, per window, how many encoder frames hold real audio."""
        mel = self.mel(np.asarray(wave, dtype=np.float32))[..., :-1]
        windows, valid = [], []
        for start in range(0, max(mel.shape[-1], 1), MEL_FRAMES):
            chunk = mel[:, start:start + MEL_FRAMES]
            valid.append(math.ceil(chunk.shape[-1] / 2))
            windows.append(np.pad(chunk, ((0, 0), (0, MEL_FRAMES - chunk.shape[-1]))))
        return np.stack(windows).astype(np.float32), valid

    def encode(self, wave: np.ndarray, batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        if wave is None or len(wave) < SAMPLE_RATE // 10:  # no (usable) audio track: no audio tokens
            return torch.zeros(0, self.cfg.feature_dim), torch.zeros(0)
        mel, valid = self.log_mel_windows(wave)
        frames = []
        for i in range(0, len(mel), batch_size):
            out = self._encode_windows(mel[i:i + batch_size])
            frames += [o[:n] for o, n in zip(out, valid[i:i + batch_size])]
        h = torch.cat(frames)  # [frames at 50 Hz, D]
        if h.shape[-1] != self.cfg.feature_dim:
            raise ValueError(f"audio encoder width {h.shape[-1]} != feature_dim {self.cfg.feature_dim}")
        n = math.ceil(h.shape[0] / self.pool)
        tokens = F.adaptive_avg_pool1d(h.T[None], n)[0].T if n * self.pool != h.shape[0] else \
            h.view(n, self.pool, -1).mean(1)
        times = (torch.arange(n, dtype=torch.float32) + 0.5) * self.pool / ENCODER_HZ
        return tokens.contiguous(), times.clamp_max(len(wave) / SAMPLE_RATE)


@AUDIO_TOWERS.register("ct2-whisper")
class CT2WhisperEncoder(AudioEncoder):
    """A CTranslate2 Whisper (the faster-whisper model the ASR stage uses), its encoder only."""

    def __init__(self, cfg: AudioConfig, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 cpu_threads: int = 0):
        from faster_whisper import WhisperModel

        super().__init__(cfg, device, dtype, cpu_threads)
        if not cfg.name_or_path:
            raise ValueError("ct2-whisper needs name_or_path (a CTranslate2 Whisper folder or cache name)")
        self.ct2 = WhisperModel(resolve_model(cfg.name_or_path), device="cpu" if device == "cpu" else "cuda",
                                compute_type="int8" if device == "cpu" else "float16", cpu_threads=cpu_threads)
        self.fingerprint = f"ct2:{cfg.name_or_path}"

    def _encode_windows(self, mel: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(self.ct2.encode(mel))).float()


@AUDIO_TOWERS.register("hf-whisper")
class HFWhisperEncoder(AudioEncoder):
    """A transformers Whisper encoder (pretrained, or seeded random init from ``cfg.arch``)."""

    def __init__(self, cfg: AudioConfig, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 cpu_threads: int = 0):
        from transformers import WhisperConfig, WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        super().__init__(cfg, device, dtype, cpu_threads)
        if cfg.name_or_path:
            self.model = WhisperModel.from_pretrained(resolve_model(cfg.name_or_path), dtype=dtype).get_encoder()
            self.fingerprint = f"pretrained:{cfg.name_or_path}"
        else:
            with seeded(cfg.init_seed):
                self.model = WhisperEncoder(WhisperConfig(**cfg.arch))
            self.fingerprint = f"random:{fingerprint(self.model)}"
        _freeze(self.model).to(device, dtype)

    def _encode_windows(self, mel: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            x = torch.from_numpy(mel).to(self.device, self.dtype)
            return self.model(x).last_hidden_state.float().cpu()

