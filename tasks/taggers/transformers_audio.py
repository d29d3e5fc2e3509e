"""Transformers audio taggers: an AudioSet classifier (``audioset``, e.g. AST; multi-label, sigmoid scores per
window, labels above a threshold) or a CLAP model scoring ``settings.audio_tagger.labels`` zero-shot (``clap``).
The GPU profile's taggers; weights come from the model hub, so the embedded profile cannot use them offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infra import model_cache
from schemas.handoff import SAMPLE_RATE
from schemas.settings import AudioTagger
from tasks.taggers import TAGGERS, Span, centred_windows, merge_window_labels, resample, windows

AUDIOSET_THRESHOLD = 0.3  # sigmoid score a label needs in a window (AudioSet taggers are multi-label)
CLAP_THRESHOLD = 0.2  # softmax share over the vocabulary a label needs in a window
TOP_K = 3  # labels kept per window at most
BATCH_WINDOWS = 16
DEFAULT_CLAP_LABELS = (
    "speech", "a man speaking", "a woman speaking", "a crowd talking", "laughter", "crying", "singing", "music",
    "piano", "guitar", "drums", "violin", "orchestra", "electronic music", "silence", "wind", "rain", "water",
    "birds chirping", "a dog barking", "traffic", "a car engine", "footsteps", "applause", "an explosion",
    "a door closing", "typing on a keyboard", "a siren", "happy music", "sad music", "tense music",
    "calm ambient sound",
)


class _WindowScorer:
    """Scores fixed windows of the waveform against a label list; subclasses load the model and score a batch."""

    threshold: float
    labels: list[str]

    @staticmethod
    def models(cfg: AudioTagger) -> list[str]:
        return [cfg.model] if cfg.model else []

    def __init__(self, cfg: AudioTagger, device: str | None = None):
        import torch
        from transformers import AutoFeatureExtractor

        if not cfg.model:
            raise ValueError(f"audio_tagger.kind={cfg.kind} needs audio_tagger.model (a transformers name or path)")
        self.cfg = cfg
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.source = model_cache.resolve(cfg.model)  # the prefetched folder: a run never downloads
        self.extractor = AutoFeatureExtractor.from_pretrained(self.source)
        self.rate = int(getattr(self.extractor, "sampling_rate", SAMPLE_RATE))
        self.name = f"{cfg.kind}:{Path(cfg.model).name if Path(cfg.model).exists() else cfg.model}"

    def _inputs(self, pieces: list[np.ndarray]) -> dict:
        inputs = self.extractor([resample(p, self.rate) for p in pieces], sampling_rate=self.rate,
                                return_tensors="pt")
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _scores(self, pieces: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def tag(self, audio: np.ndarray) -> list[Span]:
        audio = np.asarray(audio, dtype=np.float32)
        pieces = centred_windows(audio, self.cfg.window_s, self.cfg.hop_s) if self.cfg.hop_s else \
            windows(audio, self.cfg.window_s)
        labelled = []
        for i in range(0, len(pieces), BATCH_WINDOWS):
            batch = pieces[i:i + BATCH_WINDOWS]
            scores = self._scores([w[2] for w in batch])
            for (start, end, _), row in zip(batch, scores):
                top = np.argsort(-row)[:TOP_K]
                labelled.append((start, end, [(self.labels[j], float(row[j])) for j in top
                                              if row[j] >= self.threshold]))
        return merge_window_labels(labelled)


@TAGGERS.register("audioset")
class AudioSetTagger(_WindowScorer):
    """An AudioSet classifier (e.g. AST): multi-label, a sigmoid score per class and window."""

    threshold = AUDIOSET_THRESHOLD

    @staticmethod
    def model_card(cfg: AudioTagger) -> str:
        return f"`{cfg.model}` (AudioSet classifier)"

    @staticmethod
    def vocabulary(cfg: AudioTagger) -> list[str]:
        from transformers import AutoConfig

        return list(AutoConfig.from_pretrained(model_cache.resolve(cfg.model)).id2label.values())

    def __init__(self, cfg: AudioTagger, device: str | None = None):
        from transformers import AutoModelForAudioClassification

        super().__init__(cfg, device)
        self.model = AutoModelForAudioClassification.from_pretrained(self.source).to(self.device).eval()
        self.labels = [self.model.config.id2label[i] for i in range(len(self.model.config.id2label))]

    def _scores(self, pieces: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return torch.sigmoid(self.model(**self._inputs(pieces)).logits).float().cpu().numpy()


@TAGGERS.register("clap")
class ClapTagger(_WindowScorer):
    """A CLAP model scoring ``settings.audio_tagger.labels`` zero-shot: a softmax share over the labels."""

    threshold = CLAP_THRESHOLD

    @staticmethod
    def model_card(cfg: AudioTagger) -> str:
        return f"`{cfg.model}` (CLAP, zero-shot over a label vocabulary)"

    @staticmethod
    def vocabulary(cfg: AudioTagger) -> list[str]:
        return list(cfg.labels or DEFAULT_CLAP_LABELS)

    def __init__(self, cfg: AudioTagger, device: str | None = None):
        from transformers import AutoTokenizer, ClapModel

        super().__init__(cfg, device)
        self.model = ClapModel.from_pretrained(self.source).to(self.device).eval()
        self.labels = self.vocabulary(cfg)
        tokenizer = AutoTokenizer.from_pretrained(self.source)
        text = tokenizer([f"the sound of {label}" for label in self.labels], padding=True, return_tensors="pt")
        self.text_inputs = {k: v.to(self.device) for k, v in text.items()}

    def _scores(self, pieces: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(**self.text_inputs, **self._inputs(pieces))
            return torch.softmax(out.logits_per_audio, dim=-1).float().cpu().numpy()
