"""Transformers audio taggers: an AudioSet classifier (``audioset``, e.g. AST; multi-label, sigmoid scores per
window, labels above a threshold) or a CLAP model scoring ``settings.audio_tagger.labels`` zero-shot (``clap``).
The GPU profile's taggers; weights come from the model hub, so the embedded profile cannot use them offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas.handoff import SAMPLE_RATE
from schemas.settings import AudioTagger
from tasks.taggers import TAGGERS, Span, merge_window_labels, resample, windows

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


@TAGGERS.register("audioset")
@TAGGERS.register("clap")
class TransformersTagger:
    """An AudioSet classifier (``audioset``) or a CLAP model scoring a label vocabulary (``clap``)."""

    @staticmethod
    def model_card(cfg: AudioTagger) -> str:
        what = "AudioSet classifier" if cfg.kind == "audioset" else "CLAP, zero-shot over a label vocabulary"
        return f"`{cfg.model}` ({what})"

    def __init__(self, cfg: AudioTagger, device: str | None = None):
        import torch
        from transformers import AutoFeatureExtractor

        if not cfg.model:
            raise ValueError(f"audio_tagger.kind={cfg.kind} needs audio_tagger.model (a transformers name or path)")
        self.cfg = cfg
        self.kind = cfg.kind
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.extractor = AutoFeatureExtractor.from_pretrained(cfg.model)
        self.rate = int(getattr(self.extractor, "sampling_rate", SAMPLE_RATE))
        if cfg.kind == "audioset":
            from transformers import AutoModelForAudioClassification

            self.model = AutoModelForAudioClassification.from_pretrained(cfg.model).to(self.device).eval()
            self.labels = [self.model.config.id2label[i] for i in range(len(self.model.config.id2label))]
        else:  # registered for "audioset" and "clap" only
            from transformers import AutoTokenizer, ClapModel

            self.model = ClapModel.from_pretrained(cfg.model).to(self.device).eval()
            self.labels = list(cfg.labels or DEFAULT_CLAP_LABELS)
            tokenizer = AutoTokenizer.from_pretrained(cfg.model)
            text = tokenizer([f"the sound of {label}" for label in self.labels], padding=True, return_tensors="pt")
            self.text_inputs = {k: v.to(self.device) for k, v in text.items()}
        self.name = f"{cfg.kind}:{Path(cfg.model).name if Path(cfg.model).exists() else cfg.model}"

    def _scores(self, pieces: list[np.ndarray]):
        import torch

        inputs = self.extractor([resample(p, self.rate) for p in pieces], sampling_rate=self.rate,
                                return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            if self.kind == "audioset":
                return torch.sigmoid(self.model(**inputs).logits).float().cpu().numpy()
            out = self.model(**self.text_inputs, **inputs)
            return torch.softmax(out.logits_per_audio, dim=-1).float().cpu().numpy()

    def tag(self, audio: np.ndarray) -> list[Span]:
        threshold = AUDIOSET_THRESHOLD if self.kind == "audioset" else CLAP_THRESHOLD
        pieces = windows(np.asarray(audio, dtype=np.float32), self.cfg.window_s)
        labelled = []
        for i in range(0, len(pieces), BATCH_WINDOWS):
            batch = pieces[i:i + BATCH_WINDOWS]
            scores = self._scores([w[2] for w in batch])
            for (start, end, _), row in zip(batch, scores):
                top = np.argsort(-row)[:TOP_K]
                labelled.append((start, end, [(self.labels[j], float(row[j])) for j in top if row[j] >= threshold]))
        return merge_window_labels(labelled)
