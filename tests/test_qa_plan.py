"""Clip facts read from real perception text, and the QA planner: every planned option is true or false by the facts.

The timeline below is written the way the embedded models write it (the object detector's caption clauses, YAMNet
labels and signal measures with their times, Whisper's transcript), not as hand-made prose.
"""

from __future__ import annotations

from schemas.records import PAPER_TYPES, ClipDescription, QAType, hms
from tasks.clip_facts import facts_of, keys_of, sights_of, sounds_of
from tasks.qa_checks import pointing_words, singled_out_by_length
from tasks.qa_plan import DRAFTS, VideoPlan

V = "local-facts0001"
CLIPS = [  # (start, end, visual, narration, environment, timbre, event)
    (0.0, 10.0, "A dog in the centre; looks like malamute (ImageNet); bright, colourful frame mostly green; some "
                "movement between keyframes.", "", "Outdoor, rural or natural (0.0-9.0 s)", "",
     "Bark x3 (1.0-3.0 s, 4.0-6.0 s, 7.0-8.0 s)"),
    (10.0, 20.0, 'Two people on the left and a bicycle in the centre; a face visible; on-screen text reads "CITY '
                 'RIDE"; dim, colourful frame mostly grey; static between keyframes.', "Welcome to the city ride.",
     "", "voice, low register, median pitch 110 Hz (10.0-14.0 s)", "Bicycle bell (15.0-17.0 s)"),
    (20.0, 30.0, "No COCO object detected; dark, black-and-white frame mostly black; static between keyframes.", "",
     "Silence (20.0-30.0 s)", "", ""),
    (30.0, 40.0, "A piano in the centre; looks like grand piano (ImageNet); dim, muted frame mostly black; static "
                 "between keyframes.", "", "Music (30.0-40.0 s)",
     "Piano (30.0-40.0 s); tonal, harmonically rich, dark, warm sound (30.0-40.0 s)", ""),
    (40.0, 50.0, 'No COCO object detected; on-screen text reads "00:00:45.000 125 THE END"; bright, muted frame '
                 'mostly white; static between keyframes.', "", "", "pure tone near 440 Hz (A4) (40.0-50.0 s)",
     "Sine wave (40.0-50.0 s); Busy signal x2 (41.0-42.0 s, 44.0-45.0 s)"),
]


def timeline() -> list[ClipDescription]:
    out = []
    for i, (s, e, visual, narration, env, timbre, event) in enumerate(CLIPS):
        out.append(ClipDescription(video_id=V, clip_id=f"{V}.c{i:04d}", start_s=s, end_s=e, visual=visual,
                                   narration=narration, environment=env, timbre=timbre, event=event,
                                   emotion="calm, gentle (0.0-1.0 s)", fused=f"From {hms(s)} to {hms(e)}: x",
                                   model="test"))
    return out


def test_sights_are_objects_and_text_never_imagenet_guesses_or_motion():
    sights = sights_of(CLIPS[1][2])
    assert [s.phrase for s in sights] == ["two people on the left and a bicycle in the centre",
                                          'the on-screen text "CITY RIDE"']
    assert [s.phrase for s in sights_of(CLIPS[0][2])] == ["a dog in the centre"]  # not "malamute"
    # nothing named: the picture itself, as a last resort
    assert [s.phrase for s in sights_of(CLIPS[2][2])] == ["a dark, black-and-white picture, mostly black"]
    # OCR of a test pattern's clock and counter is not text anyone reads; the same words read twice are one sight
    assert [s.phrase for s in sights_of(CLIPS[4][2])] == ['the on-screen text "THE END"']
    twice = 'No COCO object detected; on-screen text reads "GENTLEGARDEN". No COCO object detected; on-screen ' \
            'text reads "GENTLE GARDEN".'
    assert len(sights_of(twice)) == 1


def test_sounds_are_named_as_a_person_would_and_judgements_are_left_out():
    clips = timeline()
    assert [s.phrase for s in sounds_of(clips[0])] == ["outdoor ambience", "the sound of a bark"]
    assert [s.phrase for s in sounds_of(clips[1])][0] == 'a voice saying "Welcome to the city ride"'
    assert "the sound of a bicycle bell" in [s.phrase for s in sounds_of(clips[1])]
    assert not any("register" in s.phrase for s in sounds_of(clips[1]))  # the voice's measures are not a sound
    assert [s.phrase for s in sounds_of(clips[3])] == ["music", "the sound of a piano"]  # no "warm sound", no mood
    # a measure names a synthetic tone better than the tagger's guesses over the same stretch
    assert [s.phrase for s in sounds_of(clips[4])] == ["a pure tone near 440 Hz"]
    assert [s.phrase for s in sounds_of(clips[2])] == ["silence"]
    bird = clips[0].model_copy(update={"environment": "Bird vocalization, bird call, bird song (1.0-5.0 s); Bird "
                                                      "(1.0-5.0 s)", "event": ""})
    assert [s.phrase for s in sounds_of(bird)] == ["bird song"]  # the narrower label of the two
    beat = clips[0].model_copy(update={"event": "regular beat at 90 bpm (0.0-9.0 s)", "environment": "",
                                       "timbre": "short sharp clicks pitched near 1500 Hz (0.0-9.0 s)"})
    assert [s.phrase for s in sounds_of(beat)] == ["a regular beat at 90 bpm"]  # its clicks are the beat
    # The tagger alone hearing a voice (it does over silent tracks) is no speech claim: the transcriber must agree.
    mumble = clips[0].model_copy(update={"narration": "unintelligible speech (2.0-3.0 s)"})
    assert not any(s.kind == "speech" for s in sounds_of(mumble))
    # AudioSet names read as a person says them: a list kept whole, a learned word in plain English
    pans = clips[0].model_copy(update={"event": "Dishes, pots, and pans (1.0-5.0 s)", "environment": ""})
    assert [s.phrase for s in sounds_of(pans)] == ["the sound of dishes, pots and pans"]
    chew = clips[0].model_copy(update={"event": "Chewing, mastication (1.0-5.0 s)", "environment": ""})
    assert [s.phrase for s in sounds_of(chew)] == ["chewing"]


def test_free_captions_are_read_as_sentences_whatever_their_case():
    coca = "a man riding a horse on a beach. a dog runs in the water . a sign reads \"st. ives. open\""
    assert [s.phrase for s in sights_of(coca)] == ["a man riding a horse on a beach", "a dog runs in the water",
                                                   'a sign reads "st. ives. open"']
    assert [s.phrase for s in sights_of("A St. Bernard in the centre; looks like collie (ImageNet).")] == \
        ["a St. Bernard in the centre"]


def _pair(option: str) -> tuple[frozenset, frozenset]:
    sight, sound = option.rsplit(", with ", 1)
    return keys_of(sight), keys_of(sound)


def _together(fact, sight_keys, sound_keys) -> bool:
    return bool(sight_keys & fact.seen_words) and bool(sound_keys & fact.heard_words)


def test_every_planned_option_is_true_or_false_by_the_facts():
    plan = VideoPlan.build(V, 50.0, timeline())
    facts = {f.clip_id: f for f in plan.facts}
    assert all(plan.candidates[t] for t in PAPER_TYPES), {t.value: len(c) for t, c in plan.candidates.items()}
    for qa_type, questions in ((t, plan.candidates[t]) for t in PAPER_TYPES):
        for q in questions:
            correct, wrong = q.options[0], q.options[1:]
            if qa_type == QAType.global_av_inference:
                assert any(_together(f, *_pair(correct)) for f in plan.facts)
                sight, sound = (p.casefold() for p in correct.rsplit(", with ", 1))
                # evidence: exactly the clips with this very sight and sound
                assert set(q.clip_ids) == {f.clip_id for f in plan.facts
                                           if sight in {s.phrase.casefold() for s in f.sights}
                                           and sound in {s.phrase.casefold() for s in f.sounds}}
                assert not any(_together(f, *_pair(w)) for w in wrong for f in plan.facts), q
            elif qa_type == QAType.time_point_anchored:
                f = facts[q.clip_ids[0]]
                assert f.start_s <= q.start_s <= f.end_s and q.end_s is None and q.anchor == f"At {hms(q.start_s)}"
                assert _together(f, *_pair(correct)) and not any(_together(f, *_pair(w)) for w in wrong)
                said = correct.rsplit(", with ", 1)[1]
                sound = next(s for s in f.sounds if s.phrase.casefold() == said.casefold())
                assert any(s <= q.start_s <= e for s, e in sound.spans)  # the sound is heard at that moment
            elif qa_type == QAType.time_range_anchored:
                cue = keys_of(q.cues[0])
                with_cue = [facts[c] for c in q.clip_ids if cue & facts[c].heard_words]
                assert with_cue and all(keys_of(correct) & f.seen_words for f in with_cue)
                assert not any(keys_of(w) & f.seen_words for w in wrong for f in with_cue), q
                assert q.anchor == f"From {hms(q.start_s)} to {hms(q.end_s)}"
            elif qa_type == QAType.cross_scene_transition:
                a, b = (facts[c] for c in q.clip_ids)
                first, then = correct.split(", then ")
                assert keys_of(first) & a.heard_words and keys_of(then) & b.heard_words
                assert keys_of(q.cues[0]) & a.seen_words and keys_of(q.cues[1]) & b.seen_words
                for w in wrong:
                    x, y = w.split(", then ")
                    assert not (keys_of(x) & a.heard_words and keys_of(y) & b.heard_words), w
            else:  # grounding: the target interval has both cues, every other one lacks one of them
                target = facts[q.clip_ids[0]]
                assert correct == f"From {hms(target.start_s)} to {hms(target.end_s)}"
                sight, sound = (keys_of(c) for c in q.cues)
                assert sight & target.seen_words and sound & target.heard_words
                others = [f for f in plan.facts if f"From {hms(f.start_s)} to {hms(f.end_s)}" in wrong]
                assert len(others) == 3 and not any(sight & f.seen_words and sound & f.heard_words for f in others)
            if q.cues and qa_type != QAType.temporal_grounding:
                assert pointing_words(" ".join(q.cues), list(q.options), 0) is None


def test_drafts_name_their_cues_and_cards_quote_them():
    plan = VideoPlan.build(V, 50.0, timeline())
    for questions in plan.candidates.values():
        for q in questions:
            assert q.draft.endswith("?") and all(c in q.draft for c in q.cues)
            names = {"sound": q.cues[-1] if q.cues else "", "sight": q.cues[0] if q.cues else "",
                     "first": q.cues[0] if q.cues else "", "second": q.cues[-1] if q.cues else "",
                     "ordinal": q.ordinal}
            names["Sound"] = names["sound"][:1].upper() + names["sound"][1:]
            assert any(q.draft == w.format(**names) for w in DRAFTS[q.type]), q.draft
            card = q.card(3)
            assert card["n"] == 3 and card["draft"] == q.draft and card.get("keep", []) == list(q.cues)


def test_the_plan_is_seeded_and_handed_out_without_repeats():
    first, again = VideoPlan.build(V, 50.0, timeline()), VideoPlan.build(V, 50.0, timeline())
    assert first.candidates == again.candidates
    other = VideoPlan.build(V, 50.0, timeline(), seed=7)
    assert any(first.candidates[t] != other.candidates[t] for t in QAType)
    taken = first.take(QAType.time_range_anchored, 2) + first.take(QAType.time_range_anchored, 2)
    assert len(taken) == len(set(taken)) and taken == first.candidates[QAType.time_range_anchored][:len(taken)]
    # a two-clip range needs both senses: asked before the one-clip ranges that sight alone answers
    ranks = [len(q.clip_ids) for q in first.candidates[QAType.time_range_anchored]]
    assert ranks == sorted(ranks, reverse=True)


def test_a_video_with_too_little_to_tell_apart_gets_no_question_of_that_type():
    one = timeline()[:1]
    plan = VideoPlan.build(V, 10.0, one)
    assert not plan.candidates[QAType.temporal_grounding]  # four intervals need four clips
    assert not plan.candidates[QAType.cross_scene_transition]
    # the options of a one-clip video come from everyday things the clip does not have
    q = plan.candidates[QAType.global_av_inference][0]
    assert _together(facts_of(one[0]), *_pair(q.options[0]))
    assert not any(_together(facts_of(one[0]), *_pair(w)) for w in q.options[1:])


def test_speech_is_timed_by_the_voice_measure_and_transitions_use_the_sounds_at_the_cut():
    clips = timeline()
    speech = sounds_of(clips[1])[0]
    assert speech.kind == "speech" and speech.spans == ((10.0, 14.0),)
    plan = VideoPlan.build(V, 50.0, clips)
    cut = next(q for q in plan.candidates[QAType.cross_scene_transition] if q.clip_ids == (f"{V}.c0001", f"{V}.c0002"))
    # the bell (15-17 s) is what is heard last before the cut at 20 s, not the voice (10-14 s)
    assert cut.options[0] == "The sound of a bicycle bell, then silence"


REASONING = [  # a dog barking three separate times, music at two times far apart, one voice, a tone
    (0.0, 10.0, "A dog in the centre.", "", "", "", "Bark (1.0-8.0 s)"),
    (10.0, 20.0, "Two people on the left.", "Welcome to the city ride.", "",
     "voice, low register, median pitch 110 Hz (10.0-14.0 s)", "Bicycle bell (15.0-17.0 s)"),
    (20.0, 30.0, "A car in the centre.", "", "Music (20.0-30.0 s)", "", ""),
    (30.0, 40.0, "A dog in the centre.", "", "", "", "Bark (31.0-38.0 s)"),
    (40.0, 50.0, "A bench on the right.", "", "", "", "Bicycle bell (41.0-43.0 s)"),
    (50.0, 60.0, "A piano in the centre.", "", "", "pure tone near 440 Hz (A4) (50.0-60.0 s)", ""),
    (60.0, 70.0, "A clock in the centre.", "", "Music (60.0-70.0 s)", "", ""),
    (70.0, 80.0, "A dog in the centre.", "", "", "", "Bark (71.0-78.0 s)"),
]


def reasoning_timeline() -> list[ClipDescription]:
    return [ClipDescription(video_id=V, clip_id=f"{V}.c{i:04d}", start_s=s, end_s=e, visual=visual, narration=said,
                            environment=env, timbre=timbre, event=event, emotion="", model="test",
                            fused=f"From {hms(s)} to {hms(e)}: x")
            for i, (s, e, visual, said, env, timbre, event) in enumerate(REASONING)]


def test_reasoning_types_are_true_by_the_whole_timeline():
    clips = reasoning_timeline()
    plan = VideoPlan.build(V, 80.0, clips)
    facts = {f.clip_id: f for f in plan.facts}
    new = (QAType.temporal_ordering, QAType.counting, QAType.long_range, QAType.speech_picture_link)
    assert all(plan.candidates[t] for t in new), {t.value: len(plan.candidates[t]) for t in new}
    # counting: the dog is seen while a bark is heard in three separate stretches
    dog = next(q for q in plan.candidates[QAType.counting] if q.cues == ("a dog in the centre", "the sound of a bark"))
    assert dog.options[0] == "Three times" and dog.options[1:] == ("Twice", "Four times", "Five times") or \
        dog.options[1:] == ("Four times", "Twice", "Five times")
    assert set(dog.clip_ids) == {f"{V}.c0000", f"{V}.c0003", f"{V}.c0007"}
    # long range: music at 20-30 s and 60-70 s; the other time's sight is a wrong option
    music = {q.ordinal: q for q in plan.candidates[QAType.long_range] if q.cues == ("music",)}
    assert music["first"].options[:2] == ("A car in the centre", "A clock in the centre")
    assert music["second"].options[:2] == ("A clock in the centre", "A car in the centre")
    assert music["second"].draft in ("Music is heard at two separate times; what is on screen the second time?",
                                     "What is shown the second time that music is heard?")
    # what is on screen while the voice speaks
    speech = plan.candidates[QAType.speech_picture_link][0]
    assert speech.options[0] == "Two people on the left"
    assert speech.cues == ('a voice saying "Welcome to the city ride"',)
    wrong_sights = [s for option in speech.options[1:] for s in sights_of(option)]
    assert wrong_sights and not any(facts[speech.clip_ids[0]].shows(s) for s in wrong_sights)
    # ordering: every option happens in its own clip, and none of the wrong ones at or before the correct one's
    for q in plan.candidates[QAType.temporal_ordering]:
        whens = []
        for option in q.options:
            sight, sound = _pair(option)
            whens.append(min(f.start_s for f in plan.facts if sight & f.seen_words and sound & f.heard_words))
        assert whens[0] < min(whens[1:]), q
    for t in new:
        for q in plan.candidates[t]:
            assert len({o.casefold() for o in q.options}) == 4
            if t != QAType.counting:
                assert singled_out_by_length(q.options, 0) is None, q.options


def test_options_are_not_told_apart_by_length():
    plan = VideoPlan.build(V, 80.0, reasoning_timeline())
    named = [q for t in QAType if t not in (QAType.temporal_grounding, QAType.counting) for q in plan.candidates[t]]
    assert named and all(singled_out_by_length(q.options, 0) is None for q in named)
    longest = sum(len(q.options[0]) > max(map(len, q.options[1:])) for q in named)
    assert longest / len(named) <= 0.5, longest
    # spares look like the detector's own sights: placed, not bare "a dog"
    assert all(s.phrase.endswith(("on the left", "in the centre", "on the right")) for s in plan.spare_sights())


def test_counts_need_an_unbroken_timeline():
    clips = reasoning_timeline()
    gap = VideoPlan.build(V, 80.0, clips[:3] + clips[4:])  # c0003 has no description: a count could miss it
    assert not gap.candidates[QAType.counting] and not gap.candidates[QAType.long_range]
    # a clip no question is about (repeated footage) still counts
    asked = VideoPlan.build(V, 80.0, clips[:3] + clips[4:], every=clips)
    assert any(q.options[0] == "Three times" for q in asked.candidates[QAType.counting])
