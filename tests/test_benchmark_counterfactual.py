"""Counterfactual audio on a hand-made benchmark whose answers are known to need the audio.

Two model-free adapters read the real ``video_context`` under each audio condition:
``HearsTheClipSound`` is right exactly when the context carries its own video's first clip sound (so it needs the
audio), ``IgnoresTheAudio`` is always right (a model that answers from the pictures). The drop, its paired interval
and the "not measuring listening" flag are checked against what these two must give.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

import numpy as np
import pytest

from benchmark.adapters import BenchContext, ModelAdapter, register, video_context
from benchmark.build import BuildConfig, FilterModels, build_avbench
from schemas.mcq import LETTERS
from benchmark.counterfactual import audio_donors, drop_rows, not_measuring_listening, paired_drop_ci, sign_test_p
from benchmark.run import run_avbench
from benchmark.score import predict
from schemas.records import PAPER_TYPES, AVBenchItem
from test_benchmark_support import make_dataset, video_id

CONFIG = BuildConfig(heldout_fraction=1.0, similarity="token_overlap")
N_VIDEOS = 10


class _ReadsContext(ModelAdapter):
    """Shared by the two test adapters: the av context of the item's video under this run's audio condition."""

    @property
    def takes_audio(self) -> bool:
        return True

    def context_of(self, item: AVBenchItem) -> str:
        donor = self.donor_of(item.video_id) if self.audio_condition == "swapped" else None
        return video_context(self.context, item.video_id, "av", audio=self.audio_condition, donor=donor)

    def prompt(self, item: AVBenchItem) -> str:
        return self.context_of(item) + "\n\n" + item.question

    def fingerprint(self) -> str:
        return f"{self.registry_name}" + self._audio_suffix()


@register("test-hears-clip-sound")
class HearsTheClipSound(_ReadsContext):
    """Model-free: right when the video's own first clip sound is in what it reads, else "A"."""

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        out = []
        for it in items:
            own_sound = self.context.descriptions(it.video_id)[0].event
            out.append(it.answer_letter if f" {own_sound}" in self.context_of(it) else "A")
        return out


@register("test-ignores-audio")
class IgnoresTheAudio(_ReadsContext):
    """Model-free: always right, whatever it hears."""

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        return [it.answer_letter for it in items]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("ds"), N_VIDEOS)
    built = build_avbench(ds, tmp_path_factory.mktemp("out"), CONFIG)
    return ds, built.items


def test_donors_cycle_and_never_give_a_video_its_own_audio():
    donors = audio_donors(["b", "a", "c"], ["a", "b", "c"])
    assert donors == {"a": "b", "b": "c", "c": "a"}
    assert audio_donors(["a"], ["a"]) == {}  # no other video: no swap
    assert audio_donors(["x"], ["a", "b"]) == {"x": "a"}  # a video outside the pool gets the next one


def test_the_paired_interval_of_the_drop():
    assert paired_drop_ci([True] * 20, [True] * 20) == (0.0, 0.0)
    lo, hi = paired_drop_ci([True] * 20, [False] * 20)
    assert lo == hi == 1.0
    a = [True] * 10 + [False] * 10
    b = [False] * 5 + [True] * 5 + [False] * 10  # 5 of the 10 right answers lost: drop 0.25
    lo, hi = paired_drop_ci(a, b, seed=3)
    assert lo <= 0.25 <= hi and lo > 0 and (lo, hi) == paired_drop_ci(a, b, seed=3)
    with pytest.raises(ValueError):
        paired_drop_ci([True], [True, False])


def test_the_sign_test_needs_enough_changed_verdicts():
    assert sign_test_p(3, 0) == 1 / 8 and sign_test_p(4, 0) == 1 / 16  # 3 or 4 of 4 lost: not significant yet
    assert sign_test_p(6, 0) == 1 / 64 and sign_test_p(6, 0) < 0.025
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(2, 5) > 0.5
    assert sign_test_p(8, 1) == pytest.approx(10 / 512)


def test_silence_and_swap_change_only_the_heard_part_of_the_context(bench):
    ds, _ = bench
    context = BenchContext(ds)
    own, donor = video_id(0), video_id(1)
    d0, dd0 = context.descriptions(own)[0], context.descriptions(donor)[0]
    original = video_context(context, own, "av")
    silent = video_context(context, own, "av", audio="silence")
    swapped = video_context(context, own, "av", audio="swapped", donor=donor)
    assert f"hear {d0.event}" in original and "Transcript:" in original
    assert d0.visual in silent and d0.event not in silent and "Transcript:" not in silent and "Heard" not in silent
    assert d0.visual in swapped and f"event: {dd0.event}" in swapped and d0.event not in swapped
    assert context.speech(donor)[0].text in swapped  # the donor's transcript
    assert video_context(context, own, "visual", audio="silence") == video_context(context, own, "visual")
    with pytest.raises(ValueError):
        video_context(context, own, "av", audio="swapped")


def test_facts_view_reads_the_planners_timeline_per_sense(bench):
    """The text oracle's view: each clip's sights, sounds and words as the planner saw them, one sense at a time."""
    from tasks.clip_facts import facts_of

    ds, _ = bench
    context = BenchContext(ds)
    own, donor = video_id(0), video_id(1)
    clips, donor_clips = context.descriptions(own), context.descriptions(donor)
    full = video_context(context, own, "av", view="facts")
    seen = [s.phrase for s in facts_of(clips[0]).sights]
    heard = [s.phrase for s in facts_of(clips[0]).sounds if s.kind != "speech"]
    assert seen and heard
    first = full.splitlines()[1]
    assert first.startswith("From 00:00:00.000 to ") and all(p in first for p in seen + heard)
    assert f'said: "{clips[0].narration}"' in first
    assert len(full.splitlines()) == len(clips) + 1  # every clip keeps its line
    visual = video_context(context, own, "visual", view="facts")
    audio = video_context(context, own, "audio", view="facts")
    assert all(p in visual for p in seen) and not any(p in visual for p in heard) and "said:" not in visual
    assert all(p in audio for p in heard) and not any(p in audio for p in seen) and "said:" in audio
    silent = video_context(context, own, "av", view="facts", audio="silence")
    assert all(p in silent for p in seen) and not any(p in silent for p in heard) and "said:" not in silent
    swapped = video_context(context, own, "av", view="facts", audio="swapped", donor=donor)
    donor_heard = [s.phrase for s in facts_of(donor_clips[0]).sounds if s.kind != "speech"]
    assert all(p in swapped.splitlines()[1] for p in seen + donor_heard)
    assert video_context(context, own, "none", view="facts") == ""
    with pytest.raises(ValueError, match="view"):
        video_context(context, own, "av", view="captions")


def test_the_drop_is_computed_right_and_a_deaf_model_is_flagged(bench):
    ds, items = bench
    context = BenchContext(ds)
    donors = audio_donors(sorted({it.video_id for it in items}), sorted({it.video_id for it in items}))
    share_a = {t: np.mean([it.answer_letter == "A" for it in items if it.type == t]) for t in PAPER_TYPES}

    hears = HearsTheClipSound(context)
    original = predict(hears, items)
    assert all(r.prediction.correct for r in original)
    rows = []
    for condition in ("silence", "swapped"):
        twin = hears.with_audio(condition, donors)
        assert twin.fingerprint() != hears.fingerprint() and hears.audio_condition == "original"
        rows += drop_rows("hears", condition, items, original, predict(twin, items))
    by = {(r.condition, r.group): r for r in rows}
    for t in PAPER_TYPES:
        for condition in ("silence", "swapped"):
            r = by[(condition, f"type={t.value}")]
            # without its own sound it answers "A": right only where A is the answer
            assert r.accuracy == 1.0 and r.counterfactual_accuracy == pytest.approx(share_a[t])
            assert r.drop == pytest.approx(1 - share_a[t]) and r.significant, r
    assert by[("silence", "overall")].n == len(items)

    deaf = IgnoresTheAudio(context)
    deaf_rows = drop_rows("deaf", "silence", items, predict(deaf, items),
                          predict(deaf.with_audio("silence", donors), items))
    assert all(r.drop == 0.0 and not r.significant for r in deaf_rows)
    flags = not_measuring_listening(rows + deaf_rows)
    assert flags["hears"] == [] and flags["deaf"] == sorted(f"type={t.value}" for t in PAPER_TYPES)


def test_an_item_without_an_answer_leaves_the_pairs_instead_of_counting_as_a_drop(bench):
    """A condition the model could not answer (a donor without features, a server down) is no evidence of
    listening: those items are counted apart and the drop is computed on the rest."""
    ds, items = bench
    context = BenchContext(ds)

    class FailsWhenSwapped(IgnoresTheAudio):
        def answer(self, batch):
            out = super().answer(batch)
            if self.audio_condition == "swapped":
                self.errors = {i: "FeatureError: no features" for i in range(len(batch))}
                return [""] * len(batch)
            return out

    deaf = FailsWhenSwapped(context)
    donors = audio_donors(sorted({it.video_id for it in items}), sorted({it.video_id for it in items}))
    rows = drop_rows("deaf", "swapped", items, predict(deaf, items), predict(deaf.with_audio("swapped", donors), items))
    overall = next(r for r in rows if r.group == "overall")
    assert overall.n == 0 and overall.errors == len(items) and not overall.significant
    assert not_measuring_listening(rows)["deaf"] == sorted(f"type={t.value}" for t in PAPER_TYPES)


def test_the_llm_is_compared_with_its_own_audio_in_the_counterfactual_layout(bench):
    from benchmark.adapters.openai_chat import OpenAIAdapter

    ds, items = bench
    llm = OpenAIAdapter(BenchContext(ds), base_url="http://127.0.0.1:9/v1", model="m")  # never asked here
    assert llm.takes_audio and llm.baseline_condition == "own"
    own = llm.with_audio("own").prompt(items[0])
    d0 = BenchContext(ds).descriptions(items[0].video_id)[0]
    assert f"{d0.visual} Heard: " in own and d0.fused not in own and "Transcript:" in own
    assert d0.fused in llm.prompt(items[0])  # the ordinary run reads the fused text
    one = llm.with_audio("swapped", {items[0].video_id: video_id(1)})
    other = llm.with_audio("swapped", {items[0].video_id: video_id(2)})
    assert len({llm.fingerprint(), one.fingerprint(), other.fingerprint(), llm.with_audio("own").fingerprint()}) == 4
    # the facts view's ordinary input is already the counterfactual layout: its own run is the baseline
    facts = OpenAIAdapter(BenchContext(ds), base_url="http://127.0.0.1:9/v1", model="m", view="facts")
    assert facts.baseline_condition == "original"
    assert facts.prompt(items[0]) == facts.with_audio("own").prompt(items[0])


def test_run_avbench_reports_the_counterfactual_rows_and_the_flag(bench, tmp_path, capsys):
    ds, _ = bench
    filters = FilterModels()
    page = run_avbench(ds, tmp_path / "out", ["test-hears-clip-sound", "test-ignores-audio", "random:seed=0"],
                       config=CONFIG, filters=filters)
    results = json.loads((page.parent / "results.json").read_text())
    models = {m["name"]: m for m in results["models"]}
    hears, deaf, rnd = (models["test-hears-clip-sound"], models["test-ignores-audio"],
                        next(m for n, m in models.items() if n.startswith("random")))
    assert {r["condition"] for r in hears["counterfactual_audio"]} == {"silence", "swapped"}
    assert hears["not_measuring_listening"] == []
    assert deaf["not_measuring_listening"] == sorted(f"type={t.value}" for t in PAPER_TYPES)
    assert rnd["counterfactual_audio"] == []  # takes no audio: nothing to take away
    answers = [json.loads(line) for line in (page.parent / "counterfactual_predictions.jsonl").open()]
    assert {a["model_name"] for a in answers} == {f"{m}[audio={c}]" for m in ("test-hears-clip-sound",
                                                   "test-ignores-audio") for c in ("silence", "swapped")}
    md = (page.parent / "results.md").read_text()
    assert "## Does the model listen?" in md and "not measuring listening" in md
    report = page.read_text()
    assert "Does the model listen?" in report
    # every item links to its QA item on its video's page in the dataset viewer, which exists
    links = re.findall(r'<a href="([^"]+)">view</a>', report)
    assert len(links) == results["scoring"]["items"]
    target, _, anchor = links[0].partition("#")
    page_file = (page.parent / target).resolve()
    assert page_file.is_file() and f'id="{anchor}"' in page_file.read_text()
    printed = capsys.readouterr().out
    assert "Does the model listen?" in printed and "not measuring listening" in printed


def test_an_item_is_dropped_as_blind_only_when_both_blind_models_answer_it(bench, tmp_path):
    from benchmark.filters import BLIND, all_answer_filter
    from test_benchmark_support import KnowsAnswers

    _, items = bench
    a, b, c = items[:3]
    right = {it.qa_id: it.options[it.answer_index] for it in (a, b)}
    first = KnowsAnswers(right, "first")
    second = KnowsAnswers({b.qa_id: right[b.qa_id], c.qa_id: c.options[c.answer_index]}, "second")
    results = all_answer_filter(BLIND, [first, second], [a, b, c], rotations=2)
    assert not results[b.item_id].passed  # both answer b in every rotation: text-answerable
    assert results[a.item_id].passed and results[c.item_id].passed  # one model alone drops nothing
    assert "first: 2/2 rotations right; second: 0/1" in results[a.item_id].detail  # second stops at its miss
    # c: the first model's miss settles it, so the second (which knows c) is never asked it
    assert "not answerable by all" in results[c.item_id].detail and "second" not in results[c.item_id].detail

    from test_benchmark_support import Failing

    # one model's decided "no" settles an item even when the other failed; a failure with only "yes" decides nothing
    mixed = all_answer_filter(BLIND, [KnowsAnswers({}, "wrong"), Failing()], [a], rotations=1)
    assert mixed[a.item_id].passed and "undecided" not in mixed[a.item_id].detail
    unsure = all_answer_filter(BLIND, [first, Failing()], [a], rotations=1)
    assert unsure[a.item_id].passed and unsure[a.item_id].detail.startswith("undecided")
    with pytest.raises(ValueError):
        all_answer_filter(BLIND, [], [a], rotations=1)

    # rotation by rotation: a model wrong in rotation 0 is asked nothing more (the verdict needs every rotation right)
    from benchmark.filters import model_filter

    wrong = KnowsAnswers({it.qa_id: it.options[(it.answer_index + 1) % 4] for it in (a, b, c)}, "always-wrong")
    verdicts = model_filter(BLIND, wrong, [a, b, c], rotations=4)
    assert wrong.calls == 3 and all(v.passed and "0/1 rotations right" in v.detail for v in verdicts.values())
    knows_all = KnowsAnswers({it.qa_id: it.options[it.answer_index] for it in (a, b, c)}, "knows-all")
    assert not any(v.passed for v in model_filter(BLIND, knows_all, [a, b, c], rotations=4).values())
    assert knows_all.calls == 12


def test_the_second_blind_model_answers_by_option_likelihood(bench):
    """SmolLM2-135M from the model cache, in process: a real model, so only what it must do is asserted."""
    from benchmark.adapters.blind_hf import LocalBlindLMAdapter

    ds, items = bench
    blind = LocalBlindLMAdapter(BenchContext(ds))
    some = items[:6]
    rows = predict(blind, some, [0, 1])
    assert all(r.prediction.parsed_letter in LETTERS for r in rows)
    assert "Clips:" not in blind.prompt(some[0]) and some[0].question in blind.prompt(some[0])
    # the same option is chosen whatever letter it sits under: the letter follows the option when rotated
    for item in some:
        r0, r1 = (r for r in rows if r.prediction.item_id == item.item_id)
        assert LETTERS.index(r1.prediction.parsed_letter) == (LETTERS.index(r0.prediction.parsed_letter) - 1) % 4
