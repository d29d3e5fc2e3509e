"""The ``vlm`` visual captioner: keyframes sent as images through the OpenAI API, one description each.

Over the fake OpenAI server (a real HTTP server) so that a failing request can be injected on demand; what the
request carries (a JPEG data URI no larger than ``vlm.max_side``) is read back from the server's log."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pytest

from fake_openai_server import Fail, FakeOpenAIServer, Reply
from perception_sample import prepared_sample
from schemas.handoff import VideoItem
from schemas.settings import VisualCaptioner, VLMEndpoint
from tasks.captioners.vlm import VLMCaptioner
from tasks.clip_facts import sights_of
from tasks.visual_caption import VisualCaptionStage


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return prepared_sample(tmp_path_factory.getbasetemp() / "perception-sample")


def image_of(body) -> np.ndarray:
    parts = body["messages"][-1]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    assert url.startswith("data:image/jpeg;base64,")
    return cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)


def describing(body) -> Reply:
    h, w = image_of(body).shape[:2]
    return Reply(f"a person stands on the left of a {w}x{h} frame. the text reads \"OPEN\". a dog sits nearby.")


def stage_for(server: FakeOpenAIServer) -> VisualCaptionStage:
    cfg = VisualCaptioner(kind="vlm", vlm=VLMEndpoint(base_url=server.base_url, model="tiny-vl", max_side=160,
                                                      max_retries=0, timeout_s=10))
    return VisualCaptionStage.standalone(cfg)


def test_each_keyframe_is_sent_as_an_image_and_described(sample):
    clips = sample.clips[:2]
    with FakeOpenAIServer(describing) as server:
        stage = stage_for(server)
        out = stage.run(VideoItem.in_folder(sample.dataset_dir, sample.video_id, clips))
    assert isinstance(stage.backend, VLMCaptioner) and not out.dead_letters
    captions = out.tables["visual_captions"]
    assert [c.t for c in captions] == [t for c in clips for t in c.keyframe_times]
    assert len(server.requests) == len(captions) and all(b["model"] == "tiny-vl" for b in server.requests)
    for body in server.requests:
        assert max(image_of(body).shape[:2]) <= 160  # scaled down before sending
        assert "on-screen" in body["messages"][0]["content"] or "text shown on screen" in body["messages"][0]["content"]
    for cap in captions:
        assert cap.captioner == "vlm:tiny-vl" and [t.label for t in cap.tags] == ["vlm"]
        assert re.match(r"a person stands on the left of a \d+x\d+ frame\.", cap.text)
    # lowercase free text is read sentence by sentence by the clip facts
    assert [s.phrase for s in sights_of(captions[0].text)][:2] == [
        f"a person stands on the left of a {captions[0].text.split(' of a ')[1].split(' ')[0]} frame",
        'the text reads "OPEN"']


def test_a_failed_request_costs_only_its_clip(sample):
    clips = sample.clips[:2]
    failing = {"n": 0}

    def responder(body):
        failing["n"] += 1
        return Fail(500, "injected") if failing["n"] == 1 else describing(body)

    with FakeOpenAIServer(responder) as server:
        out = stage_for(server).run(VideoItem.in_folder(sample.dataset_dir, sample.video_id, clips))
    assert len(out.dead_letters) == 1 and out.dead_letters[0].item_id in {c.clip_id for c in clips}
    kept = {c.clip_id for c in out.tables["visual_captions"]}
    assert len(kept) == 1 and out.dead_letters[0].item_id not in kept
