"""Segmentation, clip policy and keyframes against the synthetic samples' truth and real footage."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

from schemas.records import Clip
from schemas.settings import Resources, load_settings
from infra.frame_reader import FrameReader, SideOutput
from schemas.paths import clip_keyframe_paths
from tasks.keyframes import CandidateStore, candidate_every, extract_keyframes
from tasks.probe import probe
from devdata.samples import SampleTruth, make_samples
from tasks.scene_detectors.opencv_fast import FastAdaptiveDetector, FastContentDetector
from tasks.segment import clip_spans, decode_threads, segment_video

SEG = load_settings().segment


@pytest.fixture(scope="module")
def samples() -> list[tuple[SampleTruth, Path]]:
    # Kept between runs (make_samples reuses intact files), shared with `make samples` and the benchmark.
    folder = load_settings().paths.output_dir / "samples"
    return [(truth, folder / truth.file) for truth in make_samples(folder, seed=0, count=3)]


@pytest.fixture(scope="module")
def segmented(samples, tmp_path_factory):
    dataset = tmp_path_factory.mktemp("dataset")
    out = []
    for truth, path in samples:
        video_id = f"sample-{truth.name.replace('sample-', '')}"
        out.append((truth, path, segment_video(path, probe(path, video_id), video_id, dataset, SEG), dataset))
    return out


def test_cuts_match_the_truth_within_one_frame(segmented):
    for truth, _, result, _ in segmented:
        frame = 1.0 / truth.fps
        assert len(result.cuts_s) == len(truth.cuts_s), (truth.name, result.cuts_s, truth.cuts_s)
        for found, true in zip(result.cuts_s, truth.cuts_s, strict=True):
            assert abs(found - true) <= frame + 1e-6, (truth.name, found, true)
        assert result.decode_passes == 1
        assert result.frames_decoded == round(truth.duration_s * truth.fps)


def test_clip_policy_is_honoured(segmented):
    for truth, _, result, _ in segmented:
        clips = result.clips
        assert clips[0].start_s == 0.0 and clips[-1].end_s == pytest.approx(truth.duration_s, abs=1e-6)
        assert [c.index for c in clips] == list(range(len(clips)))
        for a, b in pairwise(clips):
            assert a.end_s == b.start_s  # contiguous: no gaps, no overlaps
        for c in clips:
            assert SEG.min_clip_s - 1e-6 <= c.end_s - c.start_s <= SEG.max_clip_s + 1e-6, (truth.name, c)
        # Every clip boundary is a true cut, or an even split of a scene longer than max_clip_s.
        starts = {round(c.start_s, 3) for c in clips[1:]}
        cut_starts = starts & {round(t, 3) for t in truth.cuts_s}
        for c in clips[1:]:
            if round(c.start_s, 3) not in cut_starts:
                scene = next(s for s in truth.scenes if s.start_s < c.start_s < s.end_s)
                assert scene.end_s - scene.start_s > SEG.max_clip_s
        # The samples hold scenes shorter than min_clip_s (merged) and longer than max_clip_s (split).
        short = [s for s in truth.scenes if s.end_s - s.start_s < SEG.min_clip_s]
        assert short and all(round(s.start_s, 3) not in starts or round(s.end_s, 3) not in starts for s in short)


def test_the_samples_exercise_both_merge_and_split(samples):
    lengths = [s.end_s - s.start_s for truth, _ in samples for s in truth.scenes]
    assert min(lengths) < SEG.min_clip_s and max(lengths) > SEG.max_clip_s


def test_keyframes_are_jpegs_inside_their_clips(segmented):
    for _, _, result, dataset in segmented:
        for clip in result.clips:
            assert len(clip.keyframe_times) == SEG.keyframes_per_clip
            assert all(clip.start_s <= t < clip.end_s for t in clip.keyframe_times)
            for path in clip_keyframe_paths(dataset, clip):
                assert path.parent == dataset / "keyframes" / clip.video_id
                image = cv2.imread(str(path))
                assert image is not None and image.shape[:2] == (result.keyframe_size[1], result.keyframe_size[0])
        assert result.keyframe_size[0] == SEG.keyframe_width and result.analysis_size[0] == SEG.analysis_width


def _frame_at(path: Path, t: float, size: tuple[int, int]) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{t:.6f}", "-i", str(path), "-frames:v", "1",
                          "-vf", f"scale={size[0]}:{size[1]}:flags=area", "-f", "rawvideo", "-pix_fmt", "bgr24",
                          "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(size[1], size[0], 3).astype(np.int16)


def test_keyframe_images_show_the_frame_at_their_time(segmented):
    truth, path, result, dataset = segmented[0]
    first, last = result.clips[0], result.clips[-1]
    kf_first = cv2.imread(str(clip_keyframe_paths(dataset, first)[1])).astype(np.int16)
    same = _frame_at(path, first.keyframe_times[1], result.keyframe_size)
    other = _frame_at(path, last.keyframe_times[1], result.keyframe_size)
    assert np.abs(kf_first - same).mean() < 6.0  # JPEG noise only
    assert np.abs(kf_first - other).mean() > 2 * np.abs(kf_first - same).mean()


def test_content_detector_is_selectable(samples, tmp_path):
    truth, path = min(samples, key=lambda s: s[0].duration_s)
    cfg = SEG.model_copy(update={"detector": "content"})
    result = segment_video(path, probe(path, "sample-content"), "sample-content", tmp_path, cfg)
    assert result.detector == "content"
    assert len(result.cuts_s) == len(truth.cuts_s)
    assert all(abs(a - b) <= 1.0 / truth.fps + 1e-6 for a, b in zip(result.cuts_s, truth.cuts_s, strict=True))


def test_big_buck_bunny_cuts_and_keyframes(shared_media, tmp_path):
    path = shared_media / "big_buck_bunny_0_30.webm"
    facts = probe(path, "test-bbb")
    result = segment_video(path, facts, "test-bbb", tmp_path, SEG)
    assert len(result.cuts_s) >= 4, result.cuts_s
    for hard_cut in (11.792, 15.667, 22.958):  # the shot changes a viewer sees (frame-checked by hand)
        assert any(abs(c - hard_cut) <= 1 / 24 + 1e-3 for c in result.cuts_s), (hard_cut, result.cuts_s)
    assert result.decoded_duration_s == pytest.approx(30.0, abs=0.1)
    for clip in result.clips:
        assert clip.keyframe_times and all(clip.start_s <= t <= clip.end_s for t in clip.keyframe_times)
        assert all(p.is_file() and p.stat().st_size > 1000 for p in clip_keyframe_paths(tmp_path, clip))
    # The extra-pass variant gives keyframes for existing clips, e.g. after changing keyframes_per_clip.
    redone = extract_keyframes(path, result.clips, tmp_path, fps_fraction=facts.fps_fraction, width=224,
                               height=126, keyframes_per_clip=2)
    for clip in redone:
        assert len(clip.keyframe_times) == 2 and all(clip.start_s <= t <= clip.end_s for t in clip.keyframe_times)
        assert all(cv2.imread(str(p)).shape == (126, 224, 3) for p in clip_keyframe_paths(tmp_path, clip))
    assert len(list((tmp_path / "keyframes" / "test-bbb").glob("*.jpg"))) == 2 * len(redone)


# ---------------------------------------------------------------- the clip policy as a pure function


def test_short_scenes_merge_into_the_next_and_a_short_tail_into_the_last():
    spans = clip_spans([5.0, 5.5, 12.0, 19.0], 20.0, min_clip_s=2.0, max_clip_s=30.0, fps=25)
    assert spans == [(0.0, 5.0), (5.0, 12.0), (12.0, 20.0)]


def test_long_spans_split_evenly_on_frame_times():
    spans = clip_spans([], 70.0, min_clip_s=2.0, max_clip_s=30.0, fps=25)
    assert len(spans) == 3 and spans[0][0] == 0.0 and spans[-1][1] == 70.0
    lengths = [b - a for a, b in spans]
    assert max(lengths) - min(lengths) <= 1 / 25 + 1e-9
    assert all(abs(a * 25 - round(a * 25)) < 1e-6 for a, _ in spans)


def test_a_video_shorter_than_min_clip_is_one_clip():
    assert clip_spans([0.5], 1.2, min_clip_s=2.0, max_clip_s=30.0, fps=25) == [(0.0, 1.2)]


def test_policy_rejects_max_below_min():
    with pytest.raises(ValueError):
        clip_spans([], 10.0, min_clip_s=5.0, max_clip_s=2.0, fps=25)


def test_candidate_store_picks_distinct_frames_inside_the_span():
    every = candidate_every(25.0, keyframes_per_clip=3, min_clip_s=2.0)
    assert every == 6  # ~4 candidates per second at 25 fps
    store = CandidateStore()
    frame = np.zeros((8, 8, 3), np.uint8)
    for n in range(0, 100, every):  # 4 s at 25 fps
        store.add(n / 25, frame)
    picked = store.pick(1.0, 2.0, 3)
    assert len(picked) == 3 and all(1.0 <= t < 2.0 for t, _ in picked)
    assert len({t for t, _ in picked}) == 3 and all(jpeg[:2] == b"\xff\xd8" for _, jpeg in picked)
    assert store.pick(1.0, 1.1, 3) == []  # candidates sit at 0.96 and 1.2
    assert len(store.pick(0.96, 1.0, 3)) == 1  # one candidate: no duplicates
    store.drop_before(2.0)
    assert store.times[0] >= 2.0


def test_candidate_store_encodes_only_the_picks_and_stays_under_its_raw_budget():
    frame = np.full((36, 64, 3), 128, np.uint8)
    store = CandidateStore()
    for n in range(10):
        store.add(n / 4, frame)
    store.pick(0.0, 2.5, 3)
    assert store.encoded_total == 3  # the other seven stay raw until dropped
    store.drop_before(2.5)
    assert store.times == [] and store._raw_bytes == 0

    bounded = CandidateStore(raw_budget=4 * frame.nbytes)
    for n in range(10):
        frame[:] = n  # the reader reuses its buffer: the store must have copied every candidate
        bounded.add(n / 4, frame)
    assert bounded._raw_bytes <= 4 * frame.nbytes and bounded.encoded_total == 6  # the six oldest, in order
    assert all(isinstance(f, bytes) for f in bounded.frames[:6])
    assert [int(np.asarray(f).mean()) for f in bounded.frames[6:]] == [6, 7, 8, 9]
    picked = bounded.pick(0.0, 2.5, 3)
    assert [t for t, _ in picked] == [0.5, 1.25, 2.0] and all(j[:2] == b"\xff\xd8" for _, j in picked)
    assert abs(cv2.imdecode(np.frombuffer(picked[0][1], np.uint8), cv2.IMREAD_COLOR).mean() - 2) < 1  # frame 2


def test_clip_records_are_valid_schema_records(segmented):
    for _, _, result, _ in segmented:
        for clip in result.clips:
            assert Clip.model_validate(clip.model_dump()) == clip


def test_stopping_a_reader_early_ends_its_ffmpeg(shared_media):
    facts = probe(shared_media / "big_buck_bunny_0_30.webm", "x")
    seen = []
    reader = FrameReader(shared_media / "big_buck_bunny_0_30.webm", width=64, height=36,
                         fps_fraction=facts.fps_fraction, source_id="x",
                         side=SideOutput(128, 72, 6, lambda t, frame: seen.append(t)))
    for n, _ in enumerate(reader):
        if n == 10:
            break
    # Leaving the loop closes the generator: its cleanup kills and reaps ffmpeg instead of leaving it blocked.
    assert reader.returncode is not None and reader.frames == 10


def test_no_duration_webm_segments_all_74_frames(shared_media, tmp_path):
    path = shared_media / "no_duration.webm"
    result = segment_video(path, probe(path, "test-nodur"), "test-nodur", tmp_path, SEG)
    assert result.frames_decoded == 74
    assert result.clips[-1].end_s == pytest.approx(4.938, abs=1e-3)


def test_a_failing_keyframe_side_surfaces_instead_of_stalling_the_decode(shared_media):
    def broken(t: float, frame: np.ndarray) -> None:
        raise ValueError("encoder broke")

    path = shared_media / "no_duration.webm"
    reader = FrameReader(path, width=64, height=36, fps_fraction=probe(path, "x").fps_fraction, source_id="x",
                         side=SideOutput(128, 72, 2, broken))
    with pytest.raises(ValueError, match="encoder broke"):
        for _ in reader:
            pass
    assert reader.frames == 74 and reader.side_frames == 37  # both pipes were read to the end


# ---------------------------------------------------------------- the OpenCV fast paths against the reference code


def test_opencv_frame_scores_equal_pyscenedetect_scores(shared_media):
    """The detectors' score is computed by OpenCV instead of the library's numpy: it must be the same number for
    every frame (so every cut is the library's own), for both detectors, over real cuts and motion."""
    path = shared_media / "big_buck_bunny_0_30.webm"
    facts = probe(path, "x")
    rate = Fraction(facts.fps_fraction)
    pairs = [(ContentDetector(threshold=SEG.content_threshold, min_scene_len=SEG.min_scene_len_frames),
              FastContentDetector(threshold=SEG.content_threshold, min_scene_len=SEG.min_scene_len_frames)),
             (AdaptiveDetector(adaptive_threshold=SEG.adaptive_threshold, min_scene_len=SEG.min_scene_len_frames),
              FastAdaptiveDetector(adaptive_threshold=SEG.adaptive_threshold, min_scene_len=SEG.min_scene_len_frames))]
    cuts = [([], []) for _ in pairs]
    reader = FrameReader(path, width=320, height=180, fps_fraction=facts.fps_fraction, source_id="x")
    for n, (_, frame) in enumerate(reader):
        timecode = FrameTimecode(n, rate)
        for (stock, fast), (stock_cuts, fast_cuts) in zip(pairs, cuts, strict=True):
            stock_cuts += stock.process_frame(timecode, frame)
            fast_cuts += fast.process_frame(timecode, frame)
            assert fast._frame_score == stock._frame_score, (n, type(stock).__name__)
        if n == 400:  # ~17 s: 3 cuts for ContentDetector, 5 for AdaptiveDetector
            break
    for stock_cuts, fast_cuts in cuts:
        assert len(stock_cuts) >= 3 and [c.frame_num for c in fast_cuts] == [c.frame_num for c in stock_cuts]


def test_reader_frames_match_ffmpeg_own_bgr_conversion(shared_media):
    """The reader takes YUV 4:2:0 from ffmpeg and converts to BGR in OpenCV: same picture as ffmpeg's own BGR."""
    path = shared_media / "big_buck_bunny_0_30.webm"
    facts = probe(path, "x")
    reader = FrameReader(path, width=320, height=180, fps_fraction=facts.fps_fraction, source_id="x")
    count = 300
    theirs = subprocess.run(reader.cmd[:-1] + ["-pix_fmt", "bgr24", "-frames:v", str(count), "pipe:1"],
                            capture_output=True, check=True).stdout
    theirs = np.frombuffer(theirs, np.uint8).reshape(count, 180, 320, 3)
    for n, (_, frame) in enumerate(reader):
        if n % 60 == 0:
            assert np.abs(frame.astype(np.int16) - theirs[n].astype(np.int16)).mean() < 4.0, n  # rounding only
        if n == count - 1:
            break


def test_side_frames_match_ffmpeg_own_bgr_conversion(shared_media):
    """Keyframe candidates also come as YUV 4:2:0 and are converted by OpenCV on the side thread: the picture is
    ffmpeg's own BGR at that size, up to rounding."""
    path = shared_media / "big_buck_bunny_0_30.webm"
    facts = probe(path, "x")
    side: dict[float, np.ndarray] = {}
    reader = FrameReader(path, width=64, height=36, fps_fraction=facts.fps_fraction, source_id="x",
                         side=SideOutput(448, 252, 24, lambda t, frame: side.__setitem__(t, frame.copy())))
    for _ in reader:
        pass
    assert len(side) == 30
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf",
           f"fps={facts.fps_fraction},select='not(mod(n\\,24))',scale=448:252:flags=bilinear,format=bgr24",
           "-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1"]
    theirs = np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, np.uint8)
    theirs = theirs.reshape(-1, 252, 448, 3)
    assert len(theirs) == len(side)
    for (t, frame), ref in zip(sorted(side.items()), theirs, strict=True):
        assert np.abs(frame.astype(np.int16) - ref.astype(np.int16)).mean() < 4.0, t


def test_decoder_threads_change_the_cost_not_the_frames(shared_media):
    """The segmentation decode runs ffmpeg with the stage's declared CPUs as threads: every frame is the same as
    with ffmpeg's default threading, and the cuts too."""
    path = shared_media / "big_buck_bunny_0_30.webm"
    facts = probe(path, "x")

    def frames(threads):
        reader = FrameReader(path, width=96, height=54, fps_fraction=facts.fps_fraction, source_id="x",
                             threads=threads)
        return reader.command(), [frame.copy() for _, frame in reader]

    one_cmd, one = frames(1)
    default_cmd, default = frames(None)
    assert one_cmd[one_cmd.index("-threads") + 1] == "1" and "-threads" not in default_cmd
    assert len(one) == len(default) == 720
    assert all(np.array_equal(a, b) for a, b in zip(one, default, strict=True))
    assert decode_threads(SEG) == 1
    assert decode_threads(SEG.model_copy(update={"resources": Resources(num_cpus=2.5)})) == 3
