"""``vlm``: each keyframe described by a vision-language model served through the OpenAI API (vLLM with
Qwen2.5-VL / Qwen3-VL), the way cosmos-curate's captioning stage does it.

The keyframe goes as a JPEG data URI (scaled down to ``vlm.max_side``), with a fixed prompt asking for an objective
description (people, objects, actions, place, on-screen text). Keyframes of a clip are sent concurrently (the
server batches them); a request that still fails after the client's retries raises, and the stage makes the clip a
dead letter while the other clips go on. Text from the model is data: the clip facts read it sentence by sentence,
and QA checks what it names like any other caption.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np

from infra.endpoint_pool import ServedModelBackend
from infra.text_bounds import cut_at_sentence
from schemas.records import Tag
from schemas.settings import VisualCaptioner
from tasks.captioners import CAPTIONERS
from tasks.captioners.coco import coco_names
from tasks.prompts import load_prompt

PROMPT = "vlm_caption.v1"
MAX_CAPTION_CHARS = 600
JPEG_QUALITY = 90


class EmptyDescription(RuntimeError):
    """The model answered with no text."""


def jpeg_data_uri(frame: np.ndarray, max_side: int) -> str:
    h, w = frame.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("the keyframe could not be encoded as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


def messages_for(frame: np.ndarray, max_side: int) -> list[dict]:
    prompt = load_prompt(PROMPT)
    return [{"role": "system", "content": prompt.section("system")},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": jpeg_data_uri(frame, max_side)}},
                                         {"type": "text", "text": prompt.section("user")}]}]


@CAPTIONERS.register("vlm")
class VLMCaptioner(ServedModelBackend):
    """Keyframe descriptions from a VLM server; one tag, ``vlm``, marks where they came from."""

    endpoint_field = "vlm"  # the section's field holding its servers (``saven llm-server start --serves vlm``)

    @staticmethod
    def model_card(cfg: VisualCaptioner) -> str:
        return f"VLM `{cfg.vlm.model}` through the OpenAI API (prompt {PROMPT})"

    @staticmethod
    def vocabulary(cfg: VisualCaptioner) -> list[str]:
        """A VLM can name anything; COCO's classes at least are checked (a question naming a dog needs a caption
        that saw one)."""
        return coco_names()

    def _describe_one(self, frame: np.ndarray) -> tuple[str, list[Tag]]:
        reply = self.servers.chat(messages=messages_for(frame, self.cfg.max_side), max_tokens=self.cfg.max_tokens,
                                  temperature=0.0)
        text = " ".join((reply.choices[0].message.content or "").split())
        if not text:
            raise EmptyDescription(f"{self.cfg.model} returned no description")
        if reply.choices[0].finish_reason == "length":  # cut at its token limit: its whole sentences only
            text = cut_at_sentence(text, max(1, len(text) - 1))
        return cut_at_sentence(text, MAX_CAPTION_CHARS), [Tag(label="vlm", score=1.0)]

    def describe(self, frames: list[np.ndarray]) -> list[tuple[str, list[Tag]]]:
        return list(self.pool.map(self._describe_one, frames))
