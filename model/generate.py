"""Inference: answer questions about a video from a trained checkpoint.

    generate(checkpoint, features, "What is heard from 00:00:05.000 to 00:00:09.000?") -> str

``SavenVidPredictor`` loads a checkpoint once and answers many questions (batched, left-padded, greedy); it also
computes features for videos that have none cached, with encoders checked against the ones the checkpoint was
trained on. The benchmark uses it through an adapter (``answer_mcq`` formats options exactly as training did).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from model.data import collate, make_sample, mcq_prompt
from model.features import (FrozenEncoders, VideoFeatures, encoder_dtype, features_path, load_features,
                            save_features)
from model.modeling import SavenVid
from schemas.records import Clip, VideoRecord


class SavenVidPredictor:
    def __init__(self, model: SavenVid, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.config, self.tokenizer, self.device = model.config, model.tokenizer, torch.device(device)
        self._encoders: FrozenEncoders | None = None
        self._audio_encoder = None  # only the audio encoder, for counterfactual (silent) audio
        self._silence: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # samples -> silent audio tokens, times

    @classmethod
    def from_checkpoint(cls, checkpoint: Path, device: str | None = None) -> "SavenVidPredictor":
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        return cls(SavenVid.from_pretrained(Path(checkpoint), dtype), device)

    def features(self, dataset_dir: Path, video: VideoRecord, clips: list[Clip]) -> VideoFeatures:
        """Cached features of ``video``, computed (and cached) with the checkpoint's encoders when missing."""
        path = features_path(dataset_dir, self.config.preset, video.video_id)
        if path.is_file():
            feats = load_features(path)
        else:
            self._encoders = self._encoders or FrozenEncoders(self.config, self.device.type)
            feats = self._encoders.encode(Path(dataset_dir), video, clips)
            save_features(path, feats)
        want = self.model.encoder_fingerprints
        if want and feats.fingerprints != want:
            raise ValueError(f"{video.video_id}: features from {feats.fingerprints}, checkpoint trained on {want}")
        return feats

    # -- counterfactual audio (AVBench: does the model listen?) -------------------------------------------------

    @torch.no_grad()
    def with_silent_audio(self, feats: VideoFeatures) -> VideoFeatures:
        """``feats`` with the audio tokens the checkpoint's audio encoder gives a silent track of the same length
        (not zeros: silence is an input the encoder has its own answer to). A video without an audio track keeps
        its (empty) audio: there is nothing to take away. Encoded once per duration."""
        from model.encoders import audio_tower
        from schemas.handoff import SAMPLE_RATE

        if feats.audio.shape[0] == 0:
            return feats
        n = max(1, round(feats.duration_s * SAMPLE_RATE))
        if n not in self._silence:
            encoder = self._encoders.audio if self._encoders is not None else self._audio_encoder
            if encoder is None:
                encoder = self._audio_encoder = audio_tower(self.config.audio, self.device.type,
                                                            encoder_dtype(self.config, self.device.type))
            want = (self.model.encoder_fingerprints or {}).get("audio")
            if want and encoder.fingerprint != want:
                raise ValueError(f"audio encoder {encoder.fingerprint}, checkpoint trained on {want}")
            self._silence[n] = encoder.encode(np.zeros(n, dtype=np.float32))
        audio, audio_t = self._silence[n]
        return replace(feats, audio=audio.to(feats.audio.dtype), audio_t=audio_t)

    @staticmethod
    def with_audio_of(feats: VideoFeatures, donor: VideoFeatures) -> VideoFeatures:
        """``feats`` with ``donor``'s audio tokens, their times stretched onto ``feats``' duration (so the swapped
        sound spans the whole video, as its own did)."""
        if donor.fingerprints.get("audio") != feats.fingerprints.get("audio"):
            raise ValueError(f"donor {donor.video_id}'s audio features come from another encoder")
        scale = feats.duration_s / donor.duration_s if donor.duration_s > 0 else 1.0
        return replace(feats, audio=donor.audio, audio_t=(donor.audio_t * scale).clamp_max(feats.duration_s))

    @torch.no_grad()
    def answer_many(self, requests: Sequence[tuple[VideoFeatures, str]], *, batch_size: int = 4,
                    max_new_tokens: int = 64, query_texts: Sequence[str] | None = None) -> list[str]:
        """Answers to (features, prompt) pairs, in order; the time range is parsed from ``query_texts`` if given."""
        answers: list[str] = []
        queries = list(query_texts) if query_texts is not None else [p for _, p in requests]
        for lo in range(0, len(requests), batch_size):
            samples = [make_sample(f, (0.0, f.duration_s), prompt, queries[lo + i], self.tokenizer, self.config)
                       for i, (f, prompt) in enumerate(requests[lo:lo + batch_size])]
            batch = {k: v.to(self.device) for k, v in collate(samples, self.tokenizer.pad_token_id, left=True).items()}
            out = self.model.generate(batch, max_new_tokens=max_new_tokens)
            answers += [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        return answers

    def answer(self, features: VideoFeatures, question: str, *, max_new_tokens: int = 64) -> str:
        return self.answer_many([(features, question)], max_new_tokens=max_new_tokens)[0]

    def answer_mcq(self, features: VideoFeatures, question: str, options: Sequence[str], *,
                   max_new_tokens: int = 32) -> str:
        return self.answer_many([(features, mcq_prompt(question, list(options)))], max_new_tokens=max_new_tokens,
                                query_texts=[question])[0]


def generate(checkpoint: Path, video_features: VideoFeatures, question: str, *, max_new_tokens: int = 64,
             device: str | None = None) -> str:
    """One answer from ``checkpoint`` (loads the model each call: use ``SavenVidPredictor`` for many)."""
    return SavenVidPredictor.from_checkpoint(checkpoint, device).answer(video_features, question,
                                                                       max_new_tokens=max_new_tokens)
