"""The audio-description stage: an audio-language model hears each clip and describes it on the paper's five axes
(``tasks.audio_describers``, picked by ``settings.audio_describer.kind``; off unless the profile enables it).

It runs beside ASR, the tagger and the keyframe captioner (it reads only the clips and the audio); the audio
caption stage then takes its words in place of the tagger's labels on the axes it describes.
"""

from __future__ import annotations

from collections import Counter

from infra.audio_io import load_audio
from infra.errors import PermanentError
from infra.pipeline import STAGES
from infra.stage import Stage
from schemas.handoff import StageResult, VideoItem
from schemas.records import AudioDescription, Clip, StageName
from schemas.settings import Settings
from infra.endpoint_pool import ServerUnavailable, unavailable_as_transient
from tasks.audio_describers import AUDIO_DESCRIBERS, HeardAxes


def description_of(clip: Clip, heard: HeardAxes | Exception, describer: str) -> AudioDescription:
    if isinstance(heard, ServerUnavailable):
        raise unavailable_as_transient(heard, StageName.audio_description, clip.video_id, clip.clip_id)
    if isinstance(heard, Exception):
        raise heard
    return AudioDescription(start_s=clip.start_s, end_s=clip.end_s, video_id=clip.video_id, clip_id=clip.clip_id,
                            speakers=heard.speakers, environment=heard.environment, timbre=heard.timbre,
                            event=heard.events, emotion=heard.emotion, describer=describer)


@STAGES.register(StageName.audio_description)
class AudioDescriptionStage(Stage):
    """Holds one describer (a client of its model server) for its lifetime; a clip whose request fails is a dead
    letter of its own and the others go on."""

    name = StageName.audio_description
    title = "audio descriptions"
    placement = "actor"
    section = "audio_describer"
    backends = AUDIO_DESCRIBERS
    reads = ("clips",)
    writes = {"audio_descriptions": AudioDescription}
    model_column = ("audio_descriptions", "describer")

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        return settings.audio_describer.enabled

    def process(self, item: VideoItem) -> StageResult:
        audio = item.load_media().audio
        if audio is None:
            raise PermanentError(self.name, item.video_id, "no decoded audio; the audio stage must run first",
                                 error_class="audio_missing")
        clips = sorted(item.clips, key=lambda c: c.start_s)
        heard = self.backend.describe([load_audio(audio, c.start_s, c.end_s) for c in clips])
        rows, dead = self.each(zip(clips, heard), lambda pair: description_of(*pair, self.backend.name),
                               video_id=item.video_id, item_id=lambda pair: pair[0].clip_id)
        return StageResult(tables={"audio_descriptions": rows}, dead_letters=dead,
                           tallies={"axes_described": dict(Counter(
                               axis for r in rows for axis in ("speakers", "environment", "timbre", "event",
                                                               "emotion") if getattr(r, axis)))})
