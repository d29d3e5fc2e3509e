"""Fusion and QA stages: check functions, seeded shuffle, redundancy, fault injection, cache reruns, real vLLM."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

import llm_samples as S
from fake_openai_server import Fail, FakeOpenAIServer, Hang, Reply, schema_name_of
from schemas.records import QA_ID_PATTERN, KIND_OF_TYPE, ClipDescription, QAItem, QAType, Stage, hms
from schemas.settings import LLM
from tasks import fuse, qa
from infra.llm_client import LLMClient
from tasks.qa_checks import (CHECK_NAMES, QADraft, VideoContext, answer_index_valid, evidence_clips_known,
                             names_only_what_the_timeline_has,
                             grounding_options_are_clip_intervals, involves_seen_and_heard, no_duplicate_question,
                             options_distinct, question_is_substantive, run_checks, timestamps_in_video,
                             timestamps_match_clips)

V = S.VIDEO_ID
C = [f"{V}.c{i:04d}" for i in range(5)]


def ctx(accepted: tuple[str, ...] = ()) -> VideoContext:
    return VideoContext(V, S.DURATION_S, tuple(S.descriptions()), accepted)


def draft(**kw) -> QADraft:
    """A time-point question about clip 0 (the dog in the park) that passes every check."""
    base = dict(video_id=V, type=QAType.time_point_anchored,
                question="At 00:00:06.200, what sound does the brown dog make in the park?",
                options=["It barks while birds chirp", "It whines at a piano", "It stays silent in the rain",
                         "It howls at passing cars"],
                answer_index=0, evidence_clip_ids=[C[0]], start_s=6.2, end_s=None)
    base.update(kw)
    return QADraft(**base)


def grounding(**kw) -> QADraft:
    base = dict(type=QAType.temporal_grounding, question="Which time range best captures the brown dog barking?",
                options=[f"From {hms(s)} to {hms(e)}" for s, e in S.BOUNDS[:4]], answer_index=0,
                evidence_clip_ids=[C[0]], start_s=0.0, end_s=12.4)
    base.update(kw)
    return draft(**base)


# -- checks: each with a passing and a failing case -------------------------------------------------------------


def test_the_reference_drafts_pass_every_check():
    for d in (draft(), grounding()):
        outcome = run_checks(d, ctx())
        assert outcome.ok, outcome.failed
        assert outcome.passed == CHECK_NAMES


def test_question_is_substantive():
    assert question_is_substantive(draft(), ctx()) is None
    assert "nothing beyond its anchor" in question_is_substantive(draft(question="At 00:00:06.200,"), ctx())
    assert question_is_substantive(draft(question="At 00:00:06.200, the the the"), ctx()) is not None


def test_answer_index_valid():
    assert answer_index_valid(draft(answer_index=3), ctx()) is None
    assert "not in 0..3" in answer_index_valid(draft(answer_index=4), ctx())
    assert "3 options" in answer_index_valid(draft(options=["a", "b", "c"]), ctx())


def test_options_distinct():
    assert options_distinct(draft(), ctx()) is None
    repeated = ["It barks while birds chirp", "it barks, while birds chirp!", "It whines", "It howls"]
    assert "repeat" in options_distinct(draft(options=repeated), ctx())
    assert "empty" in options_distinct(draft(options=["It barks", " ", "It whines", "It howls"]), ctx())


def test_evidence_clips_known():
    assert evidence_clips_known(draft(), ctx()) is None
    assert "not in video" in evidence_clips_known(draft(evidence_clip_ids=["other-video.c0000"]), ctx())
    transition = dict(type=QAType.cross_scene_transition, start_s=None, question="How does the sound change?")
    assert evidence_clips_known(draft(evidence_clip_ids=[C[0], C[1]], **transition), ctx()) is None
    assert "two distinct" in evidence_clips_known(draft(evidence_clip_ids=[C[0], C[0]], **transition), ctx())


def test_timestamps_in_video():
    assert timestamps_in_video(draft(), ctx()) is None
    late = draft(question="At 00:02:00.000, what sound does the brown dog make in the park?", start_s=120.0)
    assert "outside the video" in timestamps_in_video(late, ctx())
    in_option = draft(options=["It barks at 00:05:00.000", "It whines", "It howls", "It sleeps"])
    assert "outside the video" in timestamps_in_video(in_option, ctx())


def test_timestamps_match_clips():
    assert timestamps_match_clips(draft(), ctx()) is None
    assert "in none of the evidence clips" in timestamps_match_clips(draft(start_s=30.0), ctx())
    unstated = draft(question="What sound does the brown dog make in the park?")
    assert "does not state its time point" in timestamps_match_clips(unstated, ctx())
    ranged = dict(type=QAType.time_range_anchored, question="From 00:00:00.000 to 00:00:24.800, what happens?")
    assert timestamps_match_clips(draft(evidence_clip_ids=C[:2], start_s=0.0, end_s=24.8, **ranged), ctx()) is None
    assert "differs from the evidence" in timestamps_match_clips(
        draft(evidence_clip_ids=C[:1], start_s=0.0, end_s=24.8, **ranged), ctx())
    assert timestamps_match_clips(grounding(), ctx()) is None
    assert "must not state" in timestamps_match_clips(
        grounding(question="Which time range, like 00:00:01.000, best captures the dog barking?"), ctx())
    assert "not anchored" in timestamps_match_clips(draft(type=QAType.global_av_inference), ctx())


def test_grounding_options_are_clip_intervals():
    assert grounding_options_are_clip_intervals(grounding(), ctx()) is None
    assert grounding_options_are_clip_intervals(draft(), ctx()) is None  # not a grounding question
    made_up = grounding(options=["From 00:00:00.000 to 00:00:12.400", "From 00:00:01.000 to 00:00:05.000",
                                 "From 00:00:24.800 to 00:00:37.200", "From 00:00:37.200 to 00:00:49.600"])
    assert "not a clip interval" in grounding_options_are_clip_intervals(made_up, ctx())
    assert "not the anchored clip" in grounding_options_are_clip_intervals(grounding(answer_index=1), ctx())


def test_involves_seen_and_heard():
    assert involves_seen_and_heard(draft(), ctx()) is None
    heard_only = draft(question="At 00:00:06.200, what is heard?", options=["Barking and chirping", "b", "c", "d"])
    assert "nothing seen" in involves_seen_and_heard(heard_only, ctx())
    seen_only = draft(question="At 00:00:18.000, what colour is the frisbee?", options=["Red", "b", "c", "d"],
                      evidence_clip_ids=[C[1]], start_s=18.0)
    assert "nothing heard" in involves_seen_and_heard(seen_only, ctx())
    shared_only = draft(question="At 00:00:06.200, what animal is there?", options=["A dog", "b", "c", "d"])
    assert "both the images and the sound share" in involves_seen_and_heard(shared_only, ctx())  # "dog"
    meta_only = draft(question="At 00:00:06.200, what is seen and heard in the scene?",
                      options=["A sound and a visual", "b", "c", "d"])
    assert involves_seen_and_heard(meta_only, ctx()) is not None
    other_clip = draft(question="At 00:00:06.200, what does the woman play?", options=["A piano melody", "b", "c",
                                                                                       "d"])
    assert involves_seen_and_heard(other_clip, ctx()) is not None  # true of the video, not of the evidence clip


def test_names_only_what_the_timeline_has():
    assert names_only_what_the_timeline_has(draft(), ctx()) is None
    assert names_only_what_the_timeline_has(grounding(), ctx()) is None
    # the invention a 135M model wrote for the Big Buck Bunny excerpt, planted in this video
    venice = grounding(question="Which time range best captures the scene of the 2015 Summer Olympics, filmed on a "
                                "bridge in Venice, Italy?")
    reason = names_only_what_the_timeline_has(venice, ctx())
    assert reason and all(w in reason for w in ("2015", "olympic", "venice", "italy", "bridge"))
    violin = draft(options=["A violin plays while birds chirp", "b", "c", "d"])
    assert "violin" in names_only_what_the_timeline_has(violin, ctx())
    year = draft(question="At 00:00:06.200, what sound does the brown dog make in the park in 1998?")
    assert "1998" in names_only_what_the_timeline_has(year, ctx())
    # only the correct answer is judged: distractors are meant to be wrong
    assert names_only_what_the_timeline_has(draft(options=["It barks while birds chirp", "A violin solo",
                                                           "A jet engine", "Thunder in Venice"]), ctx()) is None


def test_grounding_reads_names_numbers_and_things_from_the_perception_timeline():
    from tasks.grounding import ungrounded_names

    timeline = ['Two people on the left and a dog in the centre; on-screen text reads "OPEN CAMPUS 2026".',
                "Speech; Music (0.0-4.3 s)", "President Kennedy said ask not what your country can do"]
    assert ungrounded_names("What does President Kennedy say while 2 people stand near the dog?", timeline) == []
    assert ungrounded_names("Which umbrella says Open Campus 2026?", timeline) == ["umbrella"]
    assert ungrounded_names("When does Lincoln speak about the 3 dogs and a cat?", timeline) == \
        ["3", "cat", "lincoln"]
    # timestamps are anchors, not numbers the video must contain; sentence-initial capitals are not names
    assert ungrounded_names("At 00:01:02.500, What is heard? Dogs bark.", timeline) == []


def test_no_duplicate_question():
    assert no_duplicate_question(draft(), ctx(("How does the piano sound?",))) is None
    same = ("at 00:00:06.200 -- What sound does the brown dog make in the PARK",)
    assert "duplicates" in no_duplicate_question(draft(), ctx(same))


# -- shuffle, ids, anchors, redundancy, plans ------------------------------------------------------------------


def test_seeded_shuffle_places_the_correct_answer_at_answer_index_deterministically():
    wrong = ["w1", "w2", "w3"]
    positions = set()
    for seed in range(40):
        options, index = qa.shuffle_options("right", wrong, seed=seed)
        assert options[index] == "right" and sorted(options) == sorted(["right", *wrong])
        assert qa.shuffle_options("right", wrong, seed=seed) == (options, index)
        positions.add(index)
    assert positions == {0, 1, 2, 3}


def test_qa_id_is_the_video_id_and_a_hash_of_the_question():
    qa_id = qa.qa_id_for(V, "What barks?")
    assert re.fullmatch(QA_ID_PATTERN, qa_id) and qa_id == qa.qa_id_for(V, "What barks?")
    assert qa_id != qa.qa_id_for(V, "What chirps?")


def test_anchors_are_written_by_code():
    assert qa.anchored_question("At 00:00:06.200", "What barks?") == "At 00:00:06.200, what barks?"
    assert qa.anchored_question("At 00:00:06.200", "At 00:00:09.000, What barks?") == "At 00:00:06.200, what barks?"
    assert qa.anchored_question("From 00:00:00.000 to 00:00:12.400", "from 0:00:01 to 0:00:02: Rex barks?") == \
        "From 00:00:00.000 to 00:00:12.400, Rex barks?"


def test_redundancy_check_drops_a_repeated_description():
    bodies = list(S.FUSED_BODIES)
    bodies[3] = bodies[2].replace("slow, calm", "calm and slow")  # same words as the clip before
    timeline = S.descriptions(bodies=bodies)
    kept, dropped = qa.drop_redundant(timeline, threshold=0.8)
    assert dropped == [C[3]] and [c.clip_id for c in kept] == [C[0], C[1], C[2], C[4]]
    assert qa.drop_redundant(S.descriptions(), threshold=0.8)[1] == []


def test_allowed_types_depend_on_the_clip_count():
    for n, skipped in ((1, {"cross_scene_transition", "temporal_grounding"}), (3, {"temporal_grounding"}), (4, set())):
        allowed, why = qa.allowed_types(n)
        assert set(why) == skipped and len(allowed) == 5 - len(skipped)
        assert all("needs at least" in reason for reason in why.values())


def test_time_ranges_span_only_neighbouring_clips():
    kept = [c for c in S.descriptions() if c.clip_id != C[2]]  # clip 2 dropped: 1 and 3 are not neighbours
    plan = qa.VideoPlan(S.video_record(), kept)
    spans = {t.clip_ids for t in plan.targets(QAType.time_range_anchored)}
    assert (C[0], C[1]) in spans and (C[3], C[4]) in spans and (C[1], C[3]) not in spans
    assert {t.clip_ids for t in plan.targets(QAType.cross_scene_transition)} >= {(C[1], C[3])}
    targets = [plan.target_for(QAType.time_point_anchored, a, seed=0) for a in range(4)]
    assert len({t.clip_ids for t in targets}) == 4 and targets[0] == plan.target_for(QAType.time_point_anchored, 0, 0)


def test_repeated_wrong_answers_become_temporal_distractors():
    plan = qa.VideoPlan(S.video_record(), S.descriptions())
    target = plan.targets(QAType.time_point_anchored)[0]
    wrong = plan.replace_repeated("It barks", ["it barks!", "It howls", "It howls"], target, seed=1)
    assert wrong[1] == "It howls"
    facts = {qa.heard_of(c) for c in S.descriptions()[1:]}
    assert wrong[0] in facts and wrong[2] in facts and wrong[0] != wrong[2]


def test_fused_text_prefix_comes_from_the_clip_bounds():
    clip = S.clips()[1]
    assert fuse.fused_text(clip, "From 00:09:00.000 to 00:10:00.000: We see a man.") == \
        "From 00:00:12.400 to 00:00:24.800: We see a man."
    assert fuse.fused_text(clip, "00:00:12 - 00:00:24, We  see\na man.").endswith(": We see a man.")
    with pytest.raises(ValueError):
        fuse.fused_text(clip, "From 00:00:12.400 to 00:00:24.800:  ")


def test_a_clip_without_audio_caption_is_a_dead_letter():
    inputs, dead = fuse.group_inputs(S.clips(), S.visual_captions(), S.audio_captions()[1:], S.speech())
    assert [i.clip.clip_id for i in inputs] == C[1:]
    assert len(dead) == 1 and dead[0].item_id == C[0] and dead[0].error_class == "MissingInput"
    assert dead[0].stage == Stage.fuse


# -- stages over a real HTTP server with injected faults -----------------------------------------------------------


def client_for(server: FakeOpenAIServer, cache: Path | None, **kw) -> LLMClient:
    params = dict(base_url=server.base_url, model="fake-model", cache_path=cache, timeout_s=1.0, max_retries=2,
                  max_invalid_retries=1, backoff_initial_s=0.01, backoff_max_s=0.05)
    params.update(kw)
    return LLMClient(**params)


def run_pipeline(client: LLMClient, options: qa.QAOptions | None = None) -> tuple[fuse.FuseResult, qa.QAResult]:
    async def main():
        async with client:
            inputs, dead = fuse.group_inputs(S.clips(), S.visual_captions(), S.audio_captions(), S.speech())
            fused = await fuse.fuse_clips(client, inputs)
            return fused, await qa.generate_qa(client, S.video_record(), fused.descriptions, options)

    return asyncio.run(main())


def assert_valid_items(result: qa.QAResult, timeline: list[ClipDescription]) -> None:
    context = VideoContext(V, S.DURATION_S, tuple(timeline))
    for item in result.items:
        QAItem.model_validate(item.model_dump())
        assert item.kind == KIND_OF_TYPE[item.type] and item.checks_passed == list(CHECK_NAMES)
        again = QADraft(**item.model_dump(include={"video_id", "type", "question", "options", "answer_index",
                                                   "evidence_clip_ids", "start_s", "end_s"}))
        assert run_checks(again, context).ok
    assert len({i.qa_id for i in result.items}) == len(result.items)


def make_faulty():
    """Clip 1 hangs once, clip 2 always 500, clip 3 always schema-breaking, consistency always 502, time-point QA
    always broken, global QA repeats its answer (a check failure); the rest answer like a careful model."""
    hung: list[bool] = []

    def responder(body: dict) -> Reply | Fail | Hang:
        user = body["messages"][-1]["content"]
        if schema_name_of(body) == "fused_clip" and '"clip": "00:00:12.400 to 00:00:24.800"' in user and not hung:
            hung.append(True)
            return Hang(30)
        return faulty(body)

    return responder


def faulty(body: dict) -> Reply | Fail | Hang:
    name, user = schema_name_of(body), body["messages"][-1]["content"]
    if name == "fused_clip" and '"clip": "00:00:24.800 to 00:00:37.200"' in user:
        return Fail(500)
    if name == "fused_clip" and '"clip": "00:00:37.200 to 00:00:49.600"' in user:
        return Reply('{"description": "unterminated')
    if name == "consistency_check":
        return Fail(502)
    if name == "qa_time_point_anchored":
        return Reply('{"question": 42}')
    reply = S.grounded_responder(body)
    if name == "qa_global_av_inference":  # the same sentence four times: no repair for global questions
        content = json.loads(reply.content)
        content.update(wrong_answer_1=content["correct_answer"], wrong_answer_2=content["correct_answer"])
        return Reply(json.dumps(content))
    return reply


def test_faults_become_dead_letters_and_the_run_completes(tmp_path):
    cache = tmp_path / "llm_cache.sqlite"
    with FakeOpenAIServer(make_faulty()) as server:
        client = client_for(server, cache)
        fused, result = run_pipeline(client, qa.QAOptions(attempts_per_type=2))

    assert [d.clip_id for d in fused.descriptions] == [C[0], C[1], C[4]]  # clip 1 survived its timeout
    letters = {d.item_id: d for d in fused.dead_letters}
    assert letters[C[2]].error_class == "InternalServerError" and letters[C[2]].attempts == 3
    assert letters[C[3]].error_class == "InvalidReply" and letters[C[3]].attempts == 2
    assert all(d.stage == Stage.fuse for d in fused.dead_letters)

    # Three clips left: no grounding (needs 4); the types that work produce checked items.
    assert set(result.skipped_types) == {"temporal_grounding"}
    assert {i.type for i in result.items} == {QAType.cross_scene_transition, QAType.time_range_anchored}
    assert_valid_items(result, fused.descriptions)
    classes = [d.error_class for d in result.dead_letters]
    assert classes.count("InternalServerError") == 1  # the consistency pass, skipped
    assert any(d.message.startswith("consistency check skipped") for d in result.dead_letters)
    assert classes.count("InvalidReply") == 2  # time-point QA, both attempts
    assert classes.count("check:options_distinct") == 2  # global QA, both attempts
    # drafts that reached the checks: 2 accepted + 2 rejected; every rejection counted under its checks
    assert result.drafts == len(result.items) + 2 and result.check_failures.get("options_distinct") == 2
    assert all(d.stage == Stage.qa and d.video_id == V for d in result.dead_letters)
    assert client.stats.failures == 5

    # Resume on a healthy server: only what failed is asked again; what succeeded comes from the cache.
    with FakeOpenAIServer(S.grounded_responder) as healthy:
        rerun = client_for(healthy, cache)
        fused2, result2 = run_pipeline(rerun, qa.QAOptions(attempts_per_type=2))
    assert len(fused2.descriptions) == 5 and not fused2.dead_letters
    assert rerun.stats.cache_hits == 3  # the three fused clips
    assert [schema_name_of(b) for b in healthy.requests].count("fused_clip") == 2
    assert healthy.count == rerun.stats.requests_sent
    assert {i.type for i in result2.items} == set(QAType)


def test_a_rerun_with_the_cache_sends_zero_requests(tmp_path):
    cache = tmp_path / "llm_cache.sqlite"
    with FakeOpenAIServer(S.grounded_responder) as server:
        first_client = client_for(server, cache)
        fused, result = run_pipeline(first_client)
        sent = server.count
        assert sent == first_client.stats.requests_sent == 5 + 1 + 5  # fuse, consistency, one per type
        rerun = client_for(server, cache)
        fused2, result2 = run_pipeline(rerun)
        assert server.count == sent
    assert rerun.stats.requests_sent == 0 and rerun.stats.cache_hits == sent
    assert fused2.descriptions == fused.descriptions
    assert [i.model_dump() for i in result2.items] == [i.model_dump() for i in result.items]
    assert {i.type for i in result.items} == set(QAType)
    assert_valid_items(result, fused.descriptions)


def test_model_prefixes_are_replaced_and_corrections_applied(tmp_path):
    def responder(body):
        name = schema_name_of(body)
        if name == "fused_clip":
            return Reply(json.dumps({"description": "From 00:09:00.000 to 00:10:00.000: We see a dog and hear it."}))
        if name == "consistency_check":
            return Reply(json.dumps({"issues": [{"clip_id": C[2], "problem": "says guitar, heard says piano",
                                                 "corrected_description": "We see a woman at a piano, and hear it."}]}))
        return S.grounded_responder(body)

    with FakeOpenAIServer(responder) as server:
        fused, result = run_pipeline(client_for(server, None))
    for clip, d in zip(S.clips(), fused.descriptions):
        assert d.fused == f"From {hms(clip.start_s)} to {hms(clip.end_s)}: We see a dog and hear it."
    # Every fused body is the same but clip 2's corrected one: each repeat of the clip before it is dropped.
    assert result.dropped_clip_ids == [C[1], C[4]]
    fixed = {d.clip_id: d for d in result.timeline}
    assert fixed[C[2]].fused == "From 00:00:24.800 to 00:00:37.200: We see a woman at a piano, and hear it."
    assert result.issues[0].applied and result.issues[0].clip_id == C[2]


def test_sync_entry_points(tmp_path):
    with FakeOpenAIServer(S.grounded_responder) as server:
        llm = LLM(base_url=server.base_url, model="fake-model", max_retries=1)
        inputs, _ = fuse.group_inputs(S.clips(), S.visual_captions(), S.audio_captions(), S.speech())
        fused = fuse.run_fuse(inputs, llm=llm, cache_path=tmp_path / "c.sqlite")
        batch = qa.run_qa([(S.video_record(), fused.descriptions)], llm=llm, cache_path=tmp_path / "c.sqlite")
    assert len(fused.descriptions) == 5 and fused.llm["requests_sent"] == 5
    assert len(batch.results) == 1 and len(batch.results[0].items) == 5
    # The batch's counters, once: the client's totals, nothing in flight after the run.
    assert batch.llm["completed"] >= 5 and batch.llm["in_flight"] == 0
    assert batch.llm["requests_sent"] == batch.llm["completed"] + batch.llm["retries"]


# -- the real vLLM CPU server ------------------------------------------------------------------------------------


@pytest.mark.llm
@pytest.mark.flow  # minutes on a 2-core CPU server: run by `make test-flow`, which installs the grounded QA model
def test_real_llm_fuses_every_clip_and_writes_checked_qa_of_every_allowed_type(qa_llm_server, tmp_path):
    llm_server = qa_llm_server
    # Small budgets keep this in ~1-2 min on 2 cores; the schemas bound every string, so replies fit.
    client = LLMClient(base_url=llm_server.base_url, model=llm_server.model, cache_path=tmp_path / "cache.sqlite",
                       max_concurrency=8, timeout_s=300, max_retries=2, temperature=0.2, max_tokens=448, seed=0,
                       frequency_penalty=0.5, send_seed=False)  # see LLMClient.from_settings: vLLM CPU and seeds
    fused, result = run_pipeline(client, qa.QAOptions(attempts_per_type=6))

    assert not fused.dead_letters, fused.dead_letters
    assert [d.clip_id for d in fused.descriptions] == C
    for clip, d in zip(S.clips(), fused.descriptions):
        assert d.fused.startswith(f"From {hms(clip.start_s)} to {hms(clip.end_s)}: ")
        assert d.model == llm_server.model

    allowed, _ = qa.allowed_types(len(qa.drop_redundant(result.timeline, 0.8)[0]))
    assert {i.type for i in result.items} == set(allowed), [d.message for d in result.dead_letters]
    assert_valid_items(result, result.timeline)
    assert all(i.generator_model == llm_server.model for i in result.items)
    assert client.stats.completion_tokens > 0


def test_a_long_timeline_is_cut_to_the_prompt_budget_around_the_target():
    timeline = S.descriptions(S.VIDEO_ID)
    whole = qa.timeline_near(timeline, [timeline[0].clip_id], 10**6)
    assert whole == list(timeline)
    one = len(qa.quote_data(qa.timeline_data(timeline[:1])))
    budget = len(qa.quote_data(qa.timeline_data(timeline[2:4]))) + 1  # room for about two clips
    near = qa.timeline_near(timeline, [timeline[3].clip_id], budget)
    assert timeline[3] in near and len(near) < len(timeline)
    assert [c.start_s for c in near] == sorted(c.start_s for c in near)
    assert len(qa.quote_data(qa.timeline_data(near))) <= max(budget, one)
    # the focus clip survives even a budget smaller than itself
    assert qa.timeline_near(timeline, [timeline[4].clip_id], 10) == [timeline[4]]

    windows = qa.timeline_windows(timeline, budget)
    assert [c for w in windows for c in w] == list(timeline) and len(windows) > 1
    assert all(len(w) == 1 or len(qa.quote_data(qa.timeline_data(w))) <= budget for w in windows)


def test_qa_prompts_quote_only_the_budgeted_timeline():
    timeline = S.descriptions(S.VIDEO_ID)
    plan = qa.VideoPlan(S.video_record(), timeline)
    target = plan.target_for(QAType.time_point_anchored, 0, 0)
    full = qa.render_qa_messages(plan, QAType.time_point_anchored, target)
    small = qa.render_qa_messages(plan, QAType.time_point_anchored, target, timeline_chars=500)
    assert len(json.dumps(small)) < len(json.dumps(full))
    assert target.clip_ids[0] in json.dumps(small)


def test_overlong_prose_and_answers_are_cut_at_a_word_not_rejected():
    reply = qa.consistency_model(C).model_validate({"issues": [
        {"clip_id": C[0], "problem": "the caption says " + "very " * 60 + "loud",
         "corrected_description": "A dog runs " + "and runs " * 80}]})
    issue = reply.issues[0]
    assert len(issue.problem) <= qa.MAX_PROBLEM_CHARS and issue.problem.endswith("very…")
    assert len(issue.corrected_description) <= qa.MAX_CORRECTION_CHARS
    long_answer = "The dog barks because the man throws the frisbee " + "far " * 40
    cut = qa.cut_at_word(long_answer, qa.MAX_ANSWER_CHARS, mark="")
    assert len(cut) <= qa.MAX_ANSWER_CHARS and long_answer.startswith(cut) and not cut.endswith(" ")
    assert qa.cut_at_word("short", 10) == "short"


def test_an_overlong_fused_description_keeps_its_whole_sentences():
    from infra.text_bounds import cut_at_sentence

    text = "A man walks a dog in the park. " * 15 + "Then rain falls"
    reply = fuse.FusedReply.model_validate({"description": text})
    assert len(reply.description) <= fuse.MAX_DESCRIPTION_CHARS and reply.description.endswith("park.")
    assert cut_at_sentence("One. " + "word " * 100, 60).endswith("…")  # no sentence end in the second half


def test_grounding_ignores_the_ids_and_times_the_timeline_prints():
    from tasks.grounding import ungrounded_names

    timeline = ["Music (0.5-5.8 s); Beep, bleep x2 (11.6-15.9 s)"]
    assert ungrounded_names("At 00:00:13.729, in clip local-0777d8c27df1c0a6.c0002, can you hear Music "
                            "(0.5-5.8 s)?", timeline) == []
    assert ungrounded_names("Is the beep heard 12 times?", timeline) == ["12"]


def test_the_question_writer_is_offered_names_not_pixel_measures_or_times():
    base = S.descriptions()[0].model_dump()
    clip = S.descriptions()[0].model_validate({
        **base, "visual": "Two people on the left and a dog in the centre; looks like malamute (ImageNet); "
                          "bright, muted frame mostly green; static between keyframes. No COCO object detected.",
        "event": "Bark x3 (2.4-4.8 s, 5.8-7.2 s, 8.2-9.1 s and 2 more); Beep, bleep (11.6-15.9 s)"})
    assert qa.seen_of(clip) == "Two people on the left and a dog in the centre; looks like malamute"
    assert qa.heard_of(clip) == "Bark; Beep, bleep"
    bare = clip.model_validate({**clip.model_dump(), "visual": "No COCO object detected; dark frame mostly black."})
    assert qa.seen_of(bare) == "No COCO object detected; dark frame mostly black"  # nothing named: told as it is
