"""The authored mode: the model writes whole questions from the timeline; code checks each, a judge reads each.

Over a real HTTP server (the fake OpenAI server, so that replies with an invented instrument, a clip that does not
exist and a missing field can be injected on demand) and, with the `llm` marker, the real vLLM CPU server."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

import llm_samples as S
from benchmark.build import _is_core, judge_filter
from fake_openai_server import FakeOpenAIServer, Reply
from infra.llm_client import LLMClient
from schemas.records import FilterResult, QAType
from schemas.settings import QAOptions, load_settings
from tasks import qa
from tasks.grounding import run_vocabulary
from tasks.qa_author import AUTHORED_TYPES, authored_draft, parse_authored, timeline_rows
from tasks.qa_checks import ANCHORED_TYPES, QADraft, VideoContext, run_checks
from tasks.qa_judge import parse_letter, verdict_of

V = S.VIDEO_ID
VOCABULARY = run_vocabulary(load_settings("local-cpu"))

AUTHORED_REPLY = """\
type: source_attribution
question: What makes the high sharp sounds heard in the sunny park?
answer: The brown dog running on the grass
wrong: A man throwing a red frisbee | Wind moving the tree leaves | Birds landing near the tree
clips: 1

type: causal_inference
question: Why does the man shout while the dog runs on the grass?
answer: He praises the dog for catching the frisbee
wrong: He warns the dog about the cars | He calls to the woman at the piano | He complains about the strong wind
clips: 2

type: source_attribution
question: Which instrument does the woman in the bright living room play?
answer: A violin held under her chin
wrong: A drum set beside the sofa | A flute held with both hands | A guitar resting on her lap
clips: 3

type: speech_picture_link
question: What is on screen when the narrator speaks of how the day ended?
answer: A city street at night
wrong: A park in the daylight | A bright living room | A dog near a tree
clips: 9

type: causal_inference
question: Why is the street quiet?
answer: It is night
clips: 5
"""


def is_judge(body) -> bool:
    return "<question>" in body["messages"][-1]["content"]


def judged_letter(body, correct_by_sense: dict[str, str]) -> str:
    """The fake judge: knows the answer to the dog question by ear (a bark is heard), nothing else."""
    user = body["messages"][-1]["content"]
    sense = "visual" if '"seen"' in user else "audio"
    options = json.loads(re.search(r"<question>\n.*\n(\[.*?\])\n</question>", user, re.S).group(1))
    for line in options:
        letter, text = line.split(". ", 1)
        if text == correct_by_sense.get(sense):
            return letter
    return "X"


def responder(body):
    user = body["messages"][-1]["content"]
    if is_judge(body):
        return Reply(judged_letter(body, {"audio": "The brown dog running on the grass"}))
    if "<timeline>" in user:
        return Reply(AUTHORED_REPLY)
    return S.grounded_responder(body)


def run_authored(client: LLMClient, options: QAOptions) -> qa.QAResult:
    async def main():
        async with client:
            return await qa.generate_qa(client, S.video_record(), S.descriptions(), options, vocabulary=VOCABULARY)

    return asyncio.run(main())


def test_the_reply_is_read_field_by_field():
    found = parse_authored(AUTHORED_REPLY)
    assert [q.type for q in found] == ["source_attribution", "causal_inference", "source_attribution",
                                       "speech_picture_link", "causal_inference"]
    assert found[0].wrong == ["A man throwing a red frisbee", "Wind moving the tree leaves",
                              "Birds landing near the tree"] and found[0].clips == [1]
    assert found[4].problem(list(QAType)) == "0 wrong answers, need 3"
    assert found[0].problem([QAType.counting]).startswith("type 'source_attribution' is not one of those asked")
    # markdown decoration and one wrong answer per line are read too
    loose = parse_authored("**Type:** counting\n- question: How many?\n- answer: Twice\nwrong: Once\nwrong: Three "
                           "times\nwrong: Four times\nclips: 1, 3")
    assert loose[0].type == "counting" and len(loose[0].wrong) == 3 and loose[0].clips == [1, 3]
    # a value's own closing quote stays (on-screen text); a wholly quoted value loses its wrapping quotes
    quoted = parse_authored('type: speech_picture_link\nquestion: "What is shown?"\nanswer: The on-screen text '
                            '"HAPPY CLOUD"\nwrong: "A dog"')[0]
    assert quoted.answer == 'The on-screen text "HAPPY CLOUD"' and quoted.question == "What is shown?"
    assert quoted.wrong == ["A dog"]
    with pytest.raises(ValueError):
        parse_authored("I cannot write questions about this video.")


def test_the_judge_reads_one_sense_at_a_time():
    rows = {sense: timeline_rows(S.descriptions(), sense) for sense in ("both", "visual", "audio")}
    assert all("seen" in r and "heard" in r for r in rows["both"])
    assert not any("heard" in r or "said" in r for r in rows["visual"])
    assert not any("seen" in r for r in rows["audio"]) and any("said" in r for r in rows["audio"])
    assert parse_letter("B") == "B" and parse_letter(" x.") == "X" and parse_letter("Answer: C") == "C"
    assert verdict_of("X", "X", "A") == "both" and verdict_of("A", "X", "A") == "visual"
    assert verdict_of("B", "A", "A") == "audio" and verdict_of("A", "A", "A") == "either"


def test_authored_questions_are_checked_and_judged_and_anchored_types_stay_planned():
    with FakeOpenAIServer(responder) as server:
        client = LLMClient(base_url=server.base_url, model="fake-model", max_retries=1, backoff_initial_s=0.01)
        result = run_authored(client, QAOptions(mode="authored", attempts_per_type=1))
    by_type: dict[QAType, list] = {}
    for item in result.items:
        by_type.setdefault(item.type, []).append(item)
    # The two sound questions pass every check; the judge finds the dog one answered by ear alone.
    dog = by_type[QAType.source_attribution][0]
    assert dog.options[dog.answer_index] == "The brown dog running on the grass"
    assert dog.judge_verdict == "audio" and by_type[QAType.causal_inference][0].judge_verdict == "both"
    assert len(by_type[QAType.source_attribution]) == 1 and len(by_type[QAType.causal_inference]) == 1
    # The anchored types are planned by code, phrased by the model, and read by no judge.
    anchored = [i for i in result.items if i.type in ANCHORED_TYPES]
    assert {i.type for i in anchored} == set(ANCHORED_TYPES) and all(i.judge_verdict is None for i in anchored)
    # What failed is a dead letter with its reason: an instrument perception never reported, a clip that does not
    # exist, a question without wrong answers.
    reasons = {d.error_class: d.message for d in result.dead_letters}
    violin = reasons["check:authored_correct_option_is_reported"]  # its first failed check; the invented name too
    assert "'A violin held under her chin' is not what the evidence clips report" in violin
    assert "names_only_what_the_timeline_has" in violin and "violin" in violin.split("names_only", 1)[1]
    assert "c9999" in reasons["check:evidence_clips_known"]
    assert reasons["AuthoredItemIncomplete"] == "0 wrong answers, need 3"
    ctx = VideoContext(V, S.DURATION_S, tuple(S.descriptions()), vocabulary=VOCABULARY)
    for item in result.items:  # every accepted item passes the checks again as it was written
        again = QADraft(**item.model_dump(include={"video_id", "type", "question", "options", "answer_index",
                                                   "evidence_clip_ids", "start_s", "end_s"}))
        assert run_checks(again, ctx).ok
    # AVBench: only an authored item that needs both senses can be core.
    assert not judge_filter(dog).passed and judge_filter(by_type[QAType.causal_inference][0]).passed
    decided = [FilterResult(name=n, passed=True) for n in ("near_duplicate", "blind", "audio_only", "visual_only")]
    assert _is_core(decided) and not _is_core([*decided, judge_filter(dog)])
    assert judge_filter(anchored[0]) is None


def test_the_planned_mode_asks_no_authored_only_type():
    with FakeOpenAIServer(responder) as server:
        client = LLMClient(base_url=server.base_url, model="fake-model", max_retries=1, backoff_initial_s=0.01)
        result = run_authored(client, QAOptions())
    assert not any("<timeline>" in b["messages"][-1]["content"] for b in server.requests)
    assert result.skipped_types["causal_inference"].startswith("written only in the authored mode")
    assert set(AUTHORED_TYPES) >= {QAType.source_attribution, QAType.causal_inference}


@pytest.mark.llm
def test_real_llm_authors_checked_and_judged_questions(qa_llm_server, tmp_path):
    """The authored mode end to end on the real vLLM CPU server (the profile's small model): the request, the
    parse, the checks and the judge's two requests per item run for real. What a small model writes is mostly
    rejected; this proves the plumbing and that nothing unchecked lands, not the quality of a 7B's questions."""
    client = LLMClient(base_url=qa_llm_server.base_url, model=qa_llm_server.model,
                       cache_path=tmp_path / "cache.sqlite", max_concurrency=8, timeout_s=300, max_retries=2,
                       temperature=0.2, max_tokens=448, seed=0, send_seed=False)
    types = [QAType.source_attribution, QAType.causal_inference, QAType.speech_picture_link]
    result = run_authored(client, QAOptions(mode="authored", types=types, attempts_per_type=1))
    assert client.stats.completed >= 1  # the request was answered; what the small model wrote is accounted below
    assert not [d for d in result.dead_letters if d.error_class not in ("AuthoredItemIncomplete", "InvalidReply")
                and not d.error_class.startswith("check:")], result.dead_letters
    for item in result.items:
        assert item.judge_verdict in ("both", "visual", "audio", "either") and item.type in types
    assert client.stats.completion_tokens > 0


def test_checks_an_authored_item_must_pass_that_code_plans_by_construction():
    ctx = VideoContext(V, S.DURATION_S, tuple(S.descriptions()), vocabulary=VOCABULARY)
    clip = S.descriptions()

    def failed(**fields) -> set[str]:
        draft = QADraft(video_id=V, question="Which of these goes with the barking in the park?", answer_index=0,
                        evidence_clip_ids=[clip[0].clip_id], authored=True, **fields)
        return {name for name, _ in run_checks(draft, ctx).failed}

    negated = ["The dog barks on the grass", "The dog never barks on the grass", "The man throws a red frisbee",
               "A woman plays the piano"]
    assert "options_not_negations_of_each_other" in failed(type=QAType.global_av_inference, options=negated)
    # a long-range question whose evidence is one clip
    spread = ["The dog runs across the grass", "The man throws a frisbee", "A woman sits at the piano",
              "A city street at night"]
    assert "evidence_fits_the_type" in failed(type=QAType.long_range, options=spread)
    # a wrong option that the first clip makes true: a dog is seen there while birds chirp
    true_wrong = ["A brown dog, with dog barking", "A brown dog, with birds chirping", "A red frisbee, with piano",
                  "A white key, with traffic"]
    assert "authored_wrong_options_are_false" in failed(type=QAType.global_av_inference, options=true_wrong)
    planned = QADraft(video_id=V, type=QAType.global_av_inference, question="Which of these occur together?",
                      options=true_wrong, answer_index=0, evidence_clip_ids=[clip[0].clip_id])
    assert "authored_wrong_options_are_false" not in {n for n, _ in run_checks(planned, ctx).failed}
    # a question that restates its type's description
    copied = parse_authored("type: source_attribution\nquestion: Who or what on screen makes a sound?\nanswer: a\n"
                            "wrong: b | c | d\nclips: 1")[0]
    assert "restates the type's description" in copied.problem([QAType.source_attribution])


def test_negation_twins_are_found_whatever_the_verb_form():
    ctx = VideoContext(V, S.DURATION_S, tuple(S.descriptions()), vocabulary=VOCABULARY)
    twins = QADraft(video_id=V, type=QAType.global_av_inference, question="Which sight goes with which sound?",
                    options=["The dark picture does not go with the silence.", "The dark picture goes with the sound.",
                             "The dark picture goes with the silence.", "The dark picture does not go with the sound."],
                    answer_index=2, evidence_clip_ids=[S.descriptions()[0].clip_id], authored=True)
    assert "options_not_negations_of_each_other" in {n for n, _ in run_checks(twins, ctx).failed}


def test_an_authored_correct_option_must_be_what_its_clip_reports_and_a_wrong_one_must_not():
    """Measured with Qwen2.5-1.5B: a speech-picture answer from another clip than the one where the phrase is said,
    and a pairing whose wrong options (a picture with music) were each true of a clip, both passed the checks."""
    ctx = VideoContext(V, S.DURATION_S, tuple(S.descriptions()), vocabulary=VOCABULARY)

    def failed(text: str) -> dict:
        (q,) = parse_authored(text)
        return dict(run_checks(authored_draft(V, q, S.descriptions()), ctx).failed)

    said_elsewhere = failed('type: speech_picture_link\nquestion: What is on screen when a voice says "Good boy, '
                            'catch it"?\nanswer: A woman at a black piano\nwrong: A city street at night | A brown '
                            'dog near a tree | Hands on white piano keys\nclips: 2')
    assert "is not what the evidence clips report" in said_elsewhere["authored_correct_option_is_reported"]
    right = failed('type: speech_picture_link\nquestion: What is on screen when a voice says "Good boy, catch '
                   'it"?\nanswer: A man throws a red frisbee\nwrong: A city street at night | A woman at a black '
                   'piano | Hands on white piano keys\nclips: 2')
    assert "authored_correct_option_is_reported" not in right and "authored_wrong_options_are_false" not in right
    all_true = failed("type: global_av_inference\nquestion: Which sight goes with which sound in the video?\n"
                      "answer: The black piano goes with the piano melody\nwrong: The city street goes with "
                      "traffic noise | The frisbee goes with the piano melody | The piano keys go with the traffic"
                      "\nclips: 3")
    assert "'The city street goes with traffic noise' may be true of" in all_true["authored_wrong_options_are_false"]
    # and two causes it wrote, accepted before these checks: a sound from another clip, and a thing that is itself
    elsewhere = failed("type: causal_inference\nquestion: Why does the man shout in the park?\nanswer: The piano "
                       "makes the sound of traffic\nwrong: The dog makes the sound of a bell | The street makes the "
                       "sound of a piano | The tree makes the sound of rain\nclips: 2")
    assert "is not what the evidence clips report" in elsewhere["authored_correct_option_is_reported"]
    itself = failed("type: causal_inference\nquestion: Why does the dog run in the park?\nanswer: the dog on the "
                    "grass is a dog on the grass\nwrong: the man is a woman | the park is a street | the tree is a "
                    "piano\nclips: 1")
    assert "says a thing is itself" in itself["options_not_tautologies"]


def test_evidence_a_model_did_not_cite_is_inferred_from_the_correct_answer():
    (piano,) = parse_authored("type: source_attribution\nquestion: What makes the melody heard in the room?\n"
                              "answer: The woman at the black piano\nwrong: The man with the frisbee | The brown dog "
                              "| The cars on the street")
    assert piano.problem(list(QAType)) is None and piano.clips == []
    draft = authored_draft(V, piano, S.descriptions())
    assert draft.evidence_clip_ids == [S.clip_id(V, 2)]  # the only clip that shows a woman at a black piano
    (vague,) = parse_authored("type: causal_inference\nquestion: Why?\nanswer: Because it happens\n"
                              "wrong: One | Two | Three")
    assert authored_draft(V, vague, S.descriptions()).evidence_clip_ids == []  # no clip shares a word: none cited
    ctx = VideoContext(V, S.DURATION_S, tuple(S.descriptions()), vocabulary=VOCABULARY)
    assert "evidence_clips_known" in dict(run_checks(authored_draft(V, vague, S.descriptions()), ctx).failed)
