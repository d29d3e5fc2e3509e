"""``omni``: each clip's audio heard by an audio-language model served through the OpenAI API (vLLM with
Qwen2.5-Omni / Qwen3-Omni's thinker, or Qwen2-Audio), described on the paper's five axes.

The clip goes as a 16 kHz mono WAV in an ``input_audio`` part (at most ``omni.max_clip_s`` seconds of it: the
models hear 30 s per part), with a fixed prompt; the reply is decoded to ``HeardAxes``' JSON schema by the server
and validated here. Clips of a video are sent concurrently (the server batches them); a request that still fails
after the client's retries, or a reply that is not the schema, becomes that clip's error and the stage makes it a
dead letter while the other clips go on. Text from the model is data, read like any caption.
"""

from __future__ import annotations

import base64
import io
import wave

import numpy as np

from infra.audio_io import SAMPLE_RATE
from infra.endpoint_pool import ServedModelBackend
from infra.llm_client import strict_json_schema
from infra.text_bounds import cut_at_sentence
from schemas.settings import AudioDescriber
from tasks.audio_describers import AUDIO_DESCRIBERS, HeardAxes
from tasks.prompts import load_prompt

PROMPT = "omni_audio.v1"
MAX_AXIS_CHARS = 300


class UnreadableDescription(RuntimeError):
    """The model's reply is not the five axes."""


def wav_base64(wave_16k: np.ndarray) -> str:
    """A float waveform as base64 of a 16-bit PCM WAV file (what ``input_audio`` carries)."""
    pcm = (np.clip(np.asarray(wave_16k, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def messages_for(wave_16k: np.ndarray) -> list[dict]:
    prompt = load_prompt(PROMPT)
    return [{"role": "system", "content": prompt.section("system")},
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": wav_base64(wave_16k),
                                                                                  "format": "wav"}},
                                         {"type": "text", "text": prompt.section("user")}]}]


def _tidy(text: str) -> str:
    return cut_at_sentence(" ".join(text.split()), MAX_AXIS_CHARS)


@AUDIO_DESCRIBERS.register("omni")
class OmniDescriber(ServedModelBackend):
    """Five-axis descriptions from an audio-language model server."""

    endpoint_field = "omni"  # the section's field holding its servers (``saven llm-server start --serves omni``)

    @staticmethod
    def model_card(cfg: AudioDescriber) -> str:
        return f"audio-language model `{cfg.omni.model}` through the OpenAI API (prompt {PROMPT})"

    def __init__(self, cfg: AudioDescriber):
        super().__init__(cfg)
        schema = strict_json_schema(HeardAxes)
        self.response_format = {"type": "json_schema",
                                "json_schema": {"name": "heard_axes", "schema": schema, "strict": True}}

    def _describe_one(self, wave_16k: np.ndarray) -> HeardAxes:
        heard = wave_16k[:int(self.cfg.max_clip_s * SAMPLE_RATE)]
        reply = self.servers.chat(messages=messages_for(heard), max_tokens=self.cfg.max_tokens, temperature=0.0,
                                  response_format=self.response_format)
        text = reply.choices[0].message.content or ""
        try:
            axes = HeardAxes.model_validate_json(text)
        except ValueError as exc:
            why = "cut at its token limit" if reply.choices[0].finish_reason == "length" else "not the five axes"
            raise UnreadableDescription(f"{self.cfg.model}'s reply is {why}: {text[:120]!r}") from exc
        return HeardAxes(**{k: _tidy(v) for k, v in axes.model_dump().items()})

    def _attempt(self, wave_16k: np.ndarray) -> HeardAxes | Exception:
        try:
            return self._describe_one(wave_16k)
        except Exception as exc:  # noqa: BLE001 — the clip's own error, made its dead letter by the stage
            return exc

    def describe(self, waves: list[np.ndarray]) -> list[HeardAxes | Exception]:
        return list(self.pool.map(self._attempt, waves))
