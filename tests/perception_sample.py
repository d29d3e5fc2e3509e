"""One synthetic sample video through the real media stage, shared by the perception tests of a session.

The first test module that asks renders the sample (seed 0, one video) and runs ``process_source`` on it under
pytest's session base folder; later modules find the result there and reuse it, so the ~45 s of rendering and
decoding is paid once per session, not once per module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.records import Clip
from infra.audio_io import load_audio
from schemas.paths import audio_path
from flows.media_chain import MediaResult, process_source
from devdata.samples import SampleTruth, load_truth, make_samples

SEED = 0


@dataclass(frozen=True)
class PreparedSample:
    truth: SampleTruth
    media: MediaResult
    dataset_dir: Path

    @property
    def video_id(self) -> str:
        return self.media.video.video_id

    @property
    def clips(self) -> list[Clip]:
        return self.media.clips

    def audio(self) -> np.ndarray:
        return np.asarray(load_audio(audio_path(self.dataset_dir, self.video_id)), dtype=np.float32)

    def clip_at(self, t: float) -> Clip:
        return next(c for c in self.clips if c.start_s <= t < c.end_s)


def prepared_sample(base: Path) -> PreparedSample:
    base.mkdir(parents=True, exist_ok=True)
    done = base / "media.json"
    samples, dataset = base / "samples", base / "dataset"
    if done.is_file():
        truth = load_truth(next(samples.glob("*.truth.json")))
        return PreparedSample(truth, MediaResult.model_validate_json(done.read_text()), dataset)
    (truth,) = make_samples(samples, seed=SEED, count=1)
    result = process_source(str(samples / truth.file), dataset)
    if not isinstance(result, MediaResult):
        raise RuntimeError(f"media stage failed on the sample: {result}")
    done.write_text(result.model_dump_json())
    return PreparedSample(truth, result, dataset)
