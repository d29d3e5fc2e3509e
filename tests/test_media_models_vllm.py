"""The ``omni`` audio describer and the ``vlm`` keyframe captioner against the real vLLM CPU server, serving tiny
random-init models built in code with the real Qwen2.5 tokenizer, started through the project's own server code.

vLLM's CPU build cannot serve Qwen2.5-Omni's thinker or Qwen2.5-VL here (both import torchvision, whose PyPI build
needs CUDA torch): the servers run the closest architectures it serves, Qwen2-Audio (a Whisper-style encoder into
a Qwen2 LLM: the same ``input_audio`` request) and Idefics3 (SmolVLM's: the same ``image_url`` request).

What this proves: the requests the backends build are accepted by vLLM's OpenAI server, the media reach the model
(the prompt grows with the clip's seconds, with an image), the JSON schema decoding and reply handling, and a server
that does not answer becomes each clip's transient dead letter. What it cannot: anything about the descriptions'
quality (the weights are noise) or speed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from openai import OpenAI

from infra import servers
from infra.audio_io import SAMPLE_RATE
from perception_sample import prepared_sample
from schemas.handoff import VideoItem
from schemas.settings import AudioDescriber, OmniEndpoint, VisualCaptioner, VLMEndpoint, settings
from tasks.audio_describers import omni
from tasks.audio_description import AudioDescriptionStage
from tasks.captioners import vlm
from tasks.visual_caption import VisualCaptionStage
from tiny_models import idefics3_vlm, qwen2_audio_7b_instruct

pytestmark = pytest.mark.llm

OMNI_PORT, VLM_PORT = 8016, 8017  # clear of the cluster rehearsal's servers


def _served(folder, name: str, port: int, media: str):
    """A vLLM CPU server of ``folder`` on ``port`` (the project's server spec, as `saven llm-server` builds it)."""
    cfg = settings()
    srv = cfg.llm.server.model_copy(update={
        "kind": "vllm-cpu", "model": str(folder), "served_name": name, "host": "127.0.0.1", "port": port,
        "dtype": "float32", "max_model_len": 2048, "kv_cache_space_gb": 1,
        "extra_args": ["--max-num-seqs", "4", "--limit-mm-per-prompt", f'{{"{media}": 1}}']})
    spec = servers.llm_server_spec(cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"server": srv})}))
    return dataclasses.replace(spec, name=f"{name}-server"), cfg.paths.run_dir, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return prepared_sample(tmp_path_factory.getbasetemp() / "perception-sample")


def _serving(tmp_path_factory, build, name: str, port: int, media: str):
    """A tiny model built by ``build`` and served for the module: yields its base URL."""
    folder = tmp_path_factory.mktemp(name)
    build(folder)
    spec, run_dir, url = _served(folder, name, port, media)
    servers.start(spec, run_dir)
    yield url
    servers.stop(spec, run_dir)


@pytest.fixture(scope="module")
def omni_server(tmp_path_factory):
    yield from _serving(tmp_path_factory, qwen2_audio_7b_instruct, "tiny-omni", OMNI_PORT, "audio")


@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory):
    yield from _serving(tmp_path_factory, idefics3_vlm, "tiny-vl", VLM_PORT, "image")


def _prompt_tokens(url: str, model: str, messages: list[dict]) -> int:
    reply = OpenAI(base_url=url, api_key="EMPTY").chat.completions.create(model=model, messages=messages,
                                                                          max_tokens=1, temperature=0.0)
    return reply.usage.prompt_tokens


def test_the_omni_describers_audio_reaches_the_model(omni_server):
    tone = lambda s: (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(s * SAMPLE_RATE)) / SAMPLE_RATE))
    one, four = (_prompt_tokens(omni_server, "tiny-omni", omni.messages_for(tone(s))) for s in (1.0, 4.0))
    # Qwen2-Audio hears 25 audio tokens per second: three more seconds, about 75 more prompt tokens
    assert 60 <= four - one <= 90, (one, four)


def test_every_clip_is_answered_by_the_real_server_and_a_dead_server_is_transient(omni_server, sample):
    clips = sample.clips[:4]
    item = VideoItem.in_folder(sample.dataset_dir, sample.video_id, clips)
    cfg = AudioDescriber(enabled=True, omni=OmniEndpoint(base_url=omni_server, model="tiny-omni", max_tokens=96,
                                                         max_retries=0, timeout_s=120))
    out = AudioDescriptionStage.standalone(cfg).run(item)
    described = {r.clip_id for r in out.tables["audio_descriptions"]}
    unreadable = {d.item_id for d in out.dead_letters}
    # Noise weights under the JSON schema: a reply is the five axes, or cut at max_tokens inside a string. Either
    # way the server answered every clip: no transient letter, nothing lost.
    assert described | unreadable == {c.clip_id for c in clips} and not described & unreadable
    assert all(not d.transient and "reply is" in d.message for d in out.dead_letters)
    assert all(r.describer == "omni:tiny-omni" for r in out.tables["audio_descriptions"])

    down = AudioDescriber(enabled=True, omni=OmniEndpoint(base_url="http://127.0.0.1:9/v1", model="tiny-omni",
                                                          max_retries=0, timeout_s=5))
    out = AudioDescriptionStage.standalone(down).run(item)
    assert not out.tables["audio_descriptions"] and len(out.dead_letters) == len(clips)
    assert all(d.transient and d.error_class == "server_unavailable" for d in out.dead_letters)


def test_the_vlm_captioners_keyframes_reach_the_model_and_each_is_described(vlm_server, sample):
    frame = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    text_only = [m if m["role"] == "system" else {"role": "user", "content": m["content"][1:]}
                 for m in vlm.messages_for(frame, 224)]
    with_image = _prompt_tokens(vlm_server, "tiny-vl", vlm.messages_for(frame, 224))
    assert with_image > _prompt_tokens(vlm_server, "tiny-vl", text_only) + 10  # the image's tokens

    clips = sample.clips[:2]
    cfg = VisualCaptioner(kind="vlm", vlm=VLMEndpoint(base_url=vlm_server, model="tiny-vl", max_side=224,
                                                      max_tokens=24, max_retries=0, timeout_s=120))
    out = VisualCaptionStage.standalone(cfg).run(VideoItem.in_folder(sample.dataset_dir, sample.video_id, clips))
    keyframes = [(c.clip_id, t) for c in clips for t in c.keyframe_times]
    captioned = [(c.clip_id, c.t) for c in out.tables["visual_captions"]]
    # every keyframe described, or its clip a dead letter for an empty reply (noise weights may stop at once)
    lost = {d.item_id for d in out.dead_letters}
    assert captioned == [k for k in keyframes if k[0] not in lost]
    assert all("no description" in d.message for d in out.dead_letters)
    assert all(c.captioner == "vlm:tiny-vl" and c.text for c in out.tables["visual_captions"])
