"""Arrow schemas derived from the records, and the Parquet shard writer/reader on real files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import typing
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import records as R
from schemas.arrow import arrow_schema, from_table, to_table
from schemas.shards import (SchemaVersionError, ShardIntegrityError, consolidate_dead_letters, read_records,
                            read_table, shard_keys, shard_path, visible_shards, write_dead_letters, write_shard)

REPO = Path(__file__).resolve().parents[1]
VID = "yt-abc_123"
T0 = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


def clips(n: int, video_id: str = VID) -> list[R.Clip]:
    return [R.Clip(clip_id=R.clip_id(video_id, i), video_id=video_id, index=i, start_s=i * 2.0, end_s=i * 2.0 + 1.5,
                   keyframe_times=[i * 2.0 + 0.5]) for i in range(n)]


def examples() -> dict[str, list[R.Record]]:
    """One or two valid records of every class, with optional fields both set and empty."""
    c = f"{VID}.c0000"
    qa = dict(qa_id=f"{VID}.q0123456789ab", video_id=VID, kind=R.QAKind.av_temporal,
              type=R.QAType.time_range_anchored, question="From 00:00:01.000 to 00:00:02.000, what is heard?",
              options=["a bark", "a bell", "rain", "silence"], answer_index=2, evidence_clip_ids=[c],
              start_s=1.0, end_s=2.0)
    return {
        "videos": [R.VideoRecord(video_id=VID, source="/data/x.mp4", extractor="local", title=None, media_path="m.mp4",
                                 duration_s=12.5, fps=29.97, width=640, height=360, has_audio=True, size_bytes=1234,
                                 sha256="a" * 64, acquired_at=T0, upload_date="20240101")],
        "clips": clips(2),
        "speech": [R.SpeechSegment(video_id=VID, clip_id=c, text="hello there", language="en",
                                   language_probability=0.97, avg_logprob=-0.31, no_speech_prob=0.02, start_s=0.1,
                                   end_s=1.2, words=[R.Word(word="hello", probability=0.9, start_s=0.1, end_s=0.6),
                                                     R.Word(word="there", probability=0.8, start_s=0.7, end_s=1.2)]),
                   R.SpeechSegment(video_id=VID, clip_id=c, text="no words", language="en", language_probability=1.0,
                                   avg_logprob=-1.0, no_speech_prob=0.5, start_s=1.3, end_s=1.4)],
        "audio_events": [R.AudioEvent(video_id=VID, clip_id=c, label="dog bark", axis=R.AudioAxis.event, score=0.7,
                                      tagger="signal-analysis-v1", start_s=0.2, end_s=0.4)],
        "audio_descriptions": [R.AudioDescription(video_id=VID, clip_id=c, start_s=0.0, end_s=1.5,
                                                  speakers="A man speaks calmly.", environment="A quiet garden.",
                                                  timbre="A low voice.", event="A dog barks twice.", emotion="Calm.",
                                                  describer="omni:tiny-omni")],
        "audio_captions": [R.AudioCaption(video_id=VID, clip_id=c, start_s=0.0, end_s=1.5, narration="hello",
                                          environment="", timbre="male voice", event="bark", emotion="calm",
                                          sentence="A man says hello while a dog barks.")],
        "visual_captions": [R.VisualCaption(video_id=VID, clip_id=c, t=0.5, text="a dog on grass",
                                            tags=[R.Tag(label="dog", score=0.9), R.Tag(label="grass", score=0.4)],
                                            captioner="coca")],
        "descriptions": [R.ClipDescription(video_id=VID, clip_id=c, start_s=0.0, end_s=1.5, visual="a dog",
                                           narration="hello", environment="", timbre="", event="bark", emotion="",
                                           fused="From 00:00:00.000 to 00:00:01.500: a dog barks.", model="m")],
        "qa": [R.QAItem(**qa, generator_model="qwen", checks_passed=["consistency", "redundancy"])],
        "avbench": [R.AVBenchItem(**qa, item_id="avb-0001", answer_letter="C", duration_s=12.5, core=False,
                                  benchmark_version="0.1",
                                  filters=[R.FilterResult(name="blind", passed=False, detail="text-only right"),
                                           R.FilterResult(name="near_duplicate", passed=True)])],
        "predictions": [R.Prediction(item_id="avb-0001", model_name="m", raw_answer="(C)", parsed_letter="C",
                                     correct=True),
                        R.Prediction(item_id="avb-0001", model_name="m", rotation=2, raw_answer="??",
                                     parsed_letter=None, correct=False)],
        "scores": [R.Score(model_name="m", group="overall", n=2, accuracy=0.5, ci_low=0.1, ci_high=0.9)],
        "fingerprints": [R.KeyframeHash(video_id=VID, clip_id=f"{VID}.c0003", t=2.5, dhash="c89caebe3c243c38")],
        "dedup": [R.DedupDecision(video_id=VID, clip_id=f"{VID}.c0003", kind="clip", kept_id="yt-other.c0001",
                                  distance=1.5, method="dhash64"),
                  R.DedupDecision(video_id=VID, kind="content", kept_id="yt-other", distance=0.0, method="sha256")],
        "dead_letter": [R.DeadLetter(stage=R.StageName.acquire, source_id="https://e.org/v", error_class="HTTPError",
                                     message="404", attempts=3, failed_at=T0),
                        R.DeadLetter(stage=R.StageName.qa, source_id=VID, item_id=f"{VID}.q0123456789ab",
                                     error_class="check:options_distinct", message="dup", failed_at=T0,
                                     detail='{"x": 1}')],
    }


def test_examples_cover_every_record_class():
    assert set(examples()) == set(R.ALL_RECORDS)


@pytest.mark.parametrize("table", sorted(R.ALL_RECORDS))
def test_arrow_schema_of_every_record(table):
    cls = R.ALL_RECORDS[table]
    schema = arrow_schema(cls)
    assert schema.names == list(cls.model_fields)
    assert schema.metadata == {b"saven.schema_version": R.SCHEMA_VERSION.encode(),
                               b"saven.record": cls.__name__.encode()}
    for name, info in cls.model_fields.items():
        assert schema.field(name).nullable == (type(None) in typing.get_args(info.annotation)), name
    assert from_table(to_table(examples()[table], cls), cls) == examples()[table]


def test_arrow_types():
    video, qa, avb = arrow_schema(R.VideoRecord), arrow_schema(R.QAItem), arrow_schema(R.AVBenchItem)
    assert video.field("acquired_at").type == pa.timestamp("us", tz="UTC")
    assert video.field("width").type == pa.int64() and video.field("fps").type == pa.float64()
    assert video.field("has_audio").type == pa.bool_() and not video.field("has_audio").nullable
    assert video.field("title").type == pa.string() and video.field("title").nullable
    assert qa.field("kind").type == pa.string()  # str enum
    assert qa.field("options").type == pa.list_(pa.field("item", pa.string(), nullable=False))
    assert qa.field("start_s").nullable and not qa.field("answer_index").nullable
    assert avb.field("answer_letter").type == pa.string()  # Literal
    filters = avb.field("filters").type.value_type
    assert pa.types.is_struct(filters) and filters.field("passed").type == pa.bool_()
    assert arrow_schema(R.Prediction).field("parsed_letter").nullable  # Literal | None
    assert to_table(examples()["qa"], R.QAItem).column("kind").to_pylist() == ["av_temporal"]


def test_unsupported_annotation_is_a_clear_error():
    class Bad(R.Record):
        mapping: dict[str, int]

    with pytest.raises(TypeError, match="Bad.mapping"):
        arrow_schema(Bad)


@pytest.mark.parametrize("table", ["videos", "speech", "avbench", "dead_letter", "visual_captions", "predictions"])
def test_round_trip_through_a_shard(tmp_path, table):
    records = examples()[table]
    result = write_shard(tmp_path, table, key="batch-0001", records=records)
    assert result.dead_letters == [] and result.rows == len(records)
    (info,) = result.shards
    assert info.path == tmp_path / table / f"{table}-batch-0001-00000.parquet" and info.path.is_file()
    assert pq.read_metadata(info.path).row_group(0).column(0).compression == "ZSTD"
    back = read_records(tmp_path, table)
    assert back == records
    if table == "videos":
        assert back[0].acquired_at == T0 and back[0].acquired_at.utcoffset().total_seconds() == 0


def test_dicts_are_validated_and_bad_rows_dead_lettered(tmp_path):
    good = [c.model_dump() for c in clips(3)]
    bad_time = good[1] | {"end_s": 0.5}  # ends before it starts
    bad_id = {"clip_id": "../evil", "video_id": VID, "index": 0, "start_s": 0.0, "end_s": 1.0}
    not_a_row = "garbage"
    result = write_shard(tmp_path, "clips", key=VID, records=[good[0], bad_time, bad_id, good[2], not_a_row])

    assert result.rows == 2
    assert [c.index for c in read_records(tmp_path, "clips")] == [0, 2]
    dead = read_records(tmp_path, "dead_letter")
    assert dead == result.dead_letters and len(dead) == 3
    assert {d.stage for d in dead} == {R.StageName.write}
    assert {d.error_class for d in dead} == {"ValidationError"}
    by_row = {d.message.split(":")[0]: d for d in dead}
    assert "end_s" in by_row["row 1"].message and by_row["row 1"].item_id == f"{VID}.c0001"
    assert by_row["row 1"].video_id == VID and '"end_s": 0.5' in by_row["row 1"].detail
    assert "clip_id" in by_row["row 2"].message and by_row["row 2"].item_id == "../evil"
    assert by_row["row 4"].video_id == VID and by_row["row 4"].item_id is None  # the key stands in
    assert visible_shards(tmp_path, "dead_letter") == [f"dead_letter/dead_letter-clips.{VID}-00000.parquet"]

    # A clean rerun of the key replaces both its rows and its dead letters.
    write_shard(tmp_path, "clips", key=VID, records=clips(3))
    assert len(read_records(tmp_path, "clips")) == 3
    assert read_records(tmp_path, "dead_letter") == []


def test_int_beyond_int64_is_dead_lettered(tmp_path):
    score = examples()["scores"][0]
    huge = score.model_dump() | {"n": 2**70}  # fine for pydantic, not for Arrow
    result = write_shard(tmp_path, "scores", key="run-1", records=[score, huge])
    assert result.rows == 1
    (dead,) = result.dead_letters
    assert dead.error_class in ("OverflowError", "ArrowInvalid") and dead.video_id == "run-1"


def test_wrong_record_class_is_a_programming_error(tmp_path):
    with pytest.raises(TypeError, match="cannot be written as Clip"):
        write_shard(tmp_path, "clips", key=VID, records=examples()["videos"])


@pytest.mark.parametrize("key", ["a/b", "..", "a..b", ".hidden", "-x", "", "a b", "x" * 129, "a*"])
def test_unsafe_keys_rejected(tmp_path, key):
    with pytest.raises(ValueError, match="unsafe shard key"):
        write_shard(tmp_path, "clips", key=key, records=[])
    assert not (tmp_path / "clips").exists() or not any((tmp_path / "clips").iterdir())


def test_longest_names_fit_the_file_system(tmp_path):
    key = "k" * 128
    write_shard(tmp_path, "t" * 32, key=key, records=[{"bad": 1}], model_cls=R.Clip)
    assert len(read_records(tmp_path, "dead_letter")) == 1


def test_rewriting_a_key_replaces_and_names_are_deterministic(tmp_path):
    write_shard(tmp_path, "clips", key="yt-other", records=clips(2, "yt-other"))
    first = write_shard(tmp_path, "clips", key=VID, records=clips(25), max_rows_per_shard=10)
    names = [s.path.name for s in first.shards]
    assert names == [f"clips-{VID}-{i:05d}.parquet" for i in range(3)]
    assert [s.rows for s in first.shards] == [10, 10, 5]
    assert shard_path(tmp_path, "clips", VID, 2) == first.shards[2].path

    again = write_shard(tmp_path, "clips", key=VID, records=clips(25), max_rows_per_shard=10)
    assert [s.path for s in again.shards] == [s.path for s in first.shards]
    assert read_table(tmp_path, "clips").num_rows == 27

    fewer = write_shard(tmp_path, "clips", key=VID, records=clips(4), max_rows_per_shard=10)
    assert len(fewer.shards) == 1  # the stale parts 1 and 2 are gone
    ids = read_table(tmp_path, "clips").column("clip_id").to_pylist()
    assert len(ids) == len(set(ids)) == 6
    assert ids[-2:] == ["yt-other.c0000", "yt-other.c0001"]  # shard-name order: "yt-abc_123" < "yt-other"
    assert shard_keys(tmp_path, "clips") == {VID, "yt-other"}

    empty = write_shard(tmp_path, "clips", key=VID, records=[])
    assert [s.rows for s in empty.shards] == [0]  # the key stays visibly committed, with no rows
    assert shard_keys(tmp_path, "clips") == {VID, "yt-other"}
    assert read_table(tmp_path, "clips").num_rows == 2


def test_reader_is_deterministic_and_empty_table_has_schema(tmp_path):
    assert read_table(tmp_path, "clips").schema == arrow_schema(R.Clip)
    for vid in ("yt-b", "yt-a", "yt-c"):
        write_shard(tmp_path, "clips", key=vid, records=clips(2, vid))
    assert read_table(tmp_path, "clips").column("video_id").to_pylist() == ["yt-a"] * 2 + ["yt-b"] * 2 + ["yt-c"] * 2


def test_interrupted_multi_part_rewrite_is_detected(tmp_path):
    old = write_shard(tmp_path, "clips", key=VID, records=clips(20), max_rows_per_shard=10)
    saved = old.shards[1].path.read_bytes()
    write_shard(tmp_path, "clips", key=VID, records=clips(20), max_rows_per_shard=10)
    old.shards[1].path.write_bytes(saved)  # as if the rename of part 1 never happened
    with pytest.raises(ShardIntegrityError, match=VID):
        read_table(tmp_path, "clips")
    write_shard(tmp_path, "clips", key=VID, records=clips(20), max_rows_per_shard=10)
    assert read_table(tmp_path, "clips").num_rows == 20


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from schemas.records import Clip, clip_id
    from schemas.shards import write_shard

    dataset, ready = Path(sys.argv[1]), Path(sys.argv[2])
    def rows():
        for i in range(1_000_000):
            if i == 30_000:
                ready.touch()  # three row groups are in the temp file by now
                time.sleep(600)  # the test kills us here
            vid = f"yt-big{i // 10_000}"  # clip ids have 4 digits: every 10,000 rows another video, no key twice
            yield {"clip_id": clip_id(vid, i % 10_000), "video_id": vid, "index": i % 10_000,
                   "start_s": float(i), "end_s": i + 1.0}
    write_shard(dataset, "clips", key="yt-big", records=rows())
""")


def test_writer_killed_mid_shard_leaves_nothing_partial(tmp_path):
    write_shard(tmp_path, "clips", key="yt-big", records=clips(3, "yt-big"))  # an earlier committed version
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(ready)], cwd=REPO,
                            env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        while not ready.exists():
            assert proc.poll() is None, "the writer exited before it was killed"
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        temps = list((tmp_path / "clips").glob(".*.tmp"))
        assert len(temps) == 1 and temps[0].stat().st_size > 0
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == -signal.SIGKILL
    assert visible_shards(tmp_path, "clips") == ["clips/clips-yt-big-00000.parquet"]
    assert read_records(tmp_path, "clips") == clips(3, "yt-big")  # the old version, whole

    result = write_shard(tmp_path, "clips", key="yt-big", records=clips(5, "yt-big"))
    assert result.rows == 5 and read_records(tmp_path, "clips") == clips(5, "yt-big")
    assert list((tmp_path / "clips").glob(".*.tmp")) == []  # the killed writer's temp file is cleaned up


def rewrite_shard(path: Path, change, **metadata: bytes) -> None:
    """Rewrite a shard as another writer would have, keeping its footer metadata unless overridden."""
    meta = {k: v for k, v in pq.read_metadata(path).metadata.items() if k != b"ARROW:schema"}
    meta |= {k.replace("_", ".", 1).encode(): v for k, v in metadata.items()}
    pq.write_table(change(pq.read_table(path)).replace_schema_metadata(meta), path)


def test_incompatible_major_version_is_a_clear_error(tmp_path):
    (info,) = write_shard(tmp_path, "clips", key=VID, records=clips(2)).shards
    rewrite_shard(info.path, lambda t: t, saven_schema_version=b"99.0.0")
    with pytest.raises(SchemaVersionError, match=r"99\.0\.0.*" + R.SCHEMA_VERSION.replace(".", r"\.")):
        read_table(tmp_path, "clips")


def test_shard_of_another_record_is_refused(tmp_path):
    (info,) = write_shard(tmp_path, "videos", key=VID, records=examples()["videos"]).shards
    (tmp_path / "clips").mkdir()
    os.replace(info.path, tmp_path / "clips" / f"clips-{VID}-00000.parquet")
    with pytest.raises(SchemaVersionError, match="VideoRecord"):
        read_table(tmp_path, "clips")


def test_older_minor_version_without_an_optional_column_reads(tmp_path):
    (info,) = write_shard(tmp_path, "videos", key=VID, records=examples()["videos"]).shards
    rewrite_shard(info.path, lambda t: t.drop_columns(["license"]))  # as written before `license` was added
    (video,) = read_records(tmp_path, "videos")
    assert video.license is None and video == examples()["videos"][0]


def test_dead_letters_of_a_stage_and_consolidation(tmp_path):
    acquire, qa = examples()["dead_letter"]
    write_dead_letters(tmp_path, "yt-one", [acquire])
    write_dead_letters(tmp_path, VID, [qa])
    write_shard(tmp_path, "clips", key=VID, records=[{"clip_id": "bad"}])
    info = consolidate_dead_letters(tmp_path)
    assert info.path == tmp_path / "dead_letter.parquet" and info.rows == 3
    consolidated = from_table(pq.read_table(info.path), R.DeadLetter)
    assert consolidated == read_records(tmp_path, "dead_letter")
    assert {d.error_class for d in consolidated} == {"HTTPError", "check:options_distinct", "ValidationError"}

    write_dead_letters(tmp_path, "yt-one", [])  # the source succeeded on a rerun
    assert consolidate_dead_letters(tmp_path).rows == 2
    assert not list(tmp_path.glob(".*.tmp"))
