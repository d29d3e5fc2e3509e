"""``saven-vid``: a SAVEn-Vid checkpoint answering over the dataset's cached features."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from benchmark.adapters.base import ModelAdapter, register
from benchmark.context import BenchContext
from schemas.records import AVBenchItem, VideoRecord


def _checkpoint_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "trainable.safetensors", "meta.json"):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a SAVEn-Vid checkpoint: {name} is missing")
        h.update(name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@register("saven-vid")
class SavenVidAdapter(ModelAdapter):
    """A trained SAVEn-Vid checkpoint (``model.generate``) over the dataset's cached encoder features.

    The prompt is the training prompt (``model.data.mcq_prompt``), so the model is asked exactly as it learned.
    It learned to answer "B. <the option's text>": the letter comes first, so 8 new tokens are plenty to read it
    (32 cost 1.6x the time of 8 on the demo's items, for text after the letter that nothing reads).
    Features missing from the cache are computed with the checkpoint's own encoders and cached.
    """

    def __init__(self, context: BenchContext | None = None, *, checkpoint: str | Path | None = None,
                 device: str | None = None, batch_size: int | str = 4, max_new_tokens: int | str = 8,
                 name: str | None = None, predictor: Any = None):
        """``checkpoint``: a saved checkpoint folder; or ``predictor``: a ``SavenVidPredictor`` over a model in
        memory (evaluation during training; its answers are not cached, the weights change every step)."""
        super().__init__(context)
        if (checkpoint is None) == (predictor is None):
            raise ValueError("the saven-vid adapter needs a checkpoint or a predictor, not both")
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.device, self.batch_size, self.max_new_tokens = device, int(batch_size), int(max_new_tokens)
        self._digest = _checkpoint_digest(self.checkpoint) if self.checkpoint else f"in-memory-{id(predictor):x}"
        self._name = name
        # Shared with ``with_audio`` twins: the checkpoint is loaded once.
        self._loaded: dict[str, Any] = {"predictor": predictor} if predictor is not None else {}

    @property
    def model_name(self) -> str:
        return self._name or (f"saven-vid:{self.checkpoint.name}" if self.checkpoint else "saven-vid")

    def fingerprint(self) -> str:
        return f"saven-vid:{self._digest}:max_new_tokens={self.max_new_tokens}" + self._audio_suffix()

    @property
    def takes_audio(self) -> bool:
        return True

    def _heard_features(self, feats, video: VideoRecord):
        """``feats`` with the audio of this run's condition: the audio encoder's tokens of a silent track, or the
        donor video's audio tokens with their times stretched onto this video's duration."""
        if self.audio_condition == "silence":
            return self.predictor().with_silent_audio(feats)
        if self.audio_condition == "swapped":
            donor_id = self.donor_of(video.video_id)
            donor = self.context.video(donor_id)
            if donor is None:
                raise LookupError(f"donor video {donor_id} is not in the dataset's videos table")
            heard = self.predictor().features(self.context.dataset_dir, donor, self.context.clips(donor_id))
            return self.predictor().with_audio_of(feats, heard)
        return feats

    def prompt(self, item: AVBenchItem) -> str:
        from model.data import mcq_prompt

        return mcq_prompt(item.question, item.options)

    def predictor(self):
        if "predictor" not in self._loaded:
            from model.generate import SavenVidPredictor

            self._loaded["predictor"] = SavenVidPredictor.from_checkpoint(self.checkpoint, self.device)
        return self._loaded["predictor"]

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        if self.context.dataset_dir is None:
            raise ValueError("the saven-vid adapter needs a BenchContext with the dataset folder (features)")
        predictor = self.predictor()
        answers = [""] * len(items)
        by_video: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            by_video[item.video_id].append(i)
        requests, where = [], []
        for video_id, indices in sorted(by_video.items()):
            try:
                video = self.context.video(video_id)
                if video is None:
                    raise LookupError(f"video {video_id} is not in the dataset's videos table")
                feats = predictor.features(self.context.dataset_dir, video, self.context.clips(video_id))
                feats = self._heard_features(feats, video)
            except Exception as exc:  # noqa: BLE001 — one video without features must not stop the others; recorded
                for i in indices:
                    self.errors[i] = f"{type(exc).__name__}: {exc}"
                continue
            for i in indices:
                requests.append((feats, self.prompt(items[i])))
                where.append(i)
        if requests:
            out = predictor.answer_many(requests, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                                        query_texts=[items[i].question for i in where])
            for i, text in zip(where, out, strict=True):
                answers[i] = text
        return answers
