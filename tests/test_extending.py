"""Adding a whole stage to the pipeline is one module, one list entry and one profile section (README, "Extending").

The test writes the module into a folder that joins the ``tasks`` package (as if it had been added to the tree),
names the stage in the profile's ``pipeline`` list and gives it a section under ``stages:`` (through the
environment, which pydantic-settings reads like the profile YAML), then runs the real ``build-dataset`` flow (Prefect
server, Ray, the real media and ASR stages) and finds the stage's table in the dataset, in its commit markers and in
the card, and its row in the run report. The LLM stages are left out of this pipeline, so no LLM server is needed:
what is tested is the contract, not what fusion or QA make.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

import tasks
from infra.pipeline import STAGES, Pipeline, PipelineError
from schemas.commit import committed
from schemas.records import ALL_RECORDS, VIDEO_TABLES
from schemas.settings import load_settings
from schemas.shards import read_table

STAGE_MODULE = textwrap.dedent('''
    """A throwaway stage: words spoken per clip (a test writes this file, then removes it)."""

    from infra.pipeline import STAGES
    from infra.stage import Stage
    from schemas.handoff import StageResult, VideoItem
    from schemas.records import Record
    from schemas.settings import Section


    class WordCount(Record):
        video_id: str
        clip_id: str
        words: int


    class WordCountSettings(Section):
        min_chars: int = 1  # words shorter than this are not counted


    @STAGES.register("word_count")
    class WordCountStage(Stage):
        name = "word_count"
        placement = "driver"
        section = "word_count"
        config = WordCountSettings
        reads = ("clips", "speech")
        writes = {"word_counts": WordCount}

        def process(self, item: VideoItem) -> StageResult:
            spoken = {}
            for seg in item.rows("speech"):
                spoken[seg.clip_id] = spoken.get(seg.clip_id, 0) + sum(
                    1 for w in seg.text.split() if len(w.strip(".,!?")) >= self.cfg.min_chars)
            rows = [WordCount(video_id=item.video_id, clip_id=c.clip_id, words=spoken.get(c.clip_id, 0))
                    for c in item.clips]
            return StageResult(tables={"word_counts": rows}, counts={"words": sum(r.words for r in rows)})
''')
PIPELINE = ["acquire", "probe", "audio", "segment", "fingerprint", "dedup", "asr", "word_count"]


@pytest.fixture
def word_count_stage(tmp_path, monkeypatch):
    """The new module, in a folder that joins the tasks package; the profile's list entry and section."""
    (tmp_path / "word_count.py").write_text(STAGE_MODULE)
    monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(tmp_path)])
    monkeypatch.setenv("SAVEN_PIPELINE", json.dumps(PIPELINE))  # the list entry
    monkeypatch.setenv("SAVEN_STAGES", json.dumps({"word_count": {"min_chars": 3}}))  # the section
    yield
    STAGES.unregister("word_count")
    VIDEO_TABLES.pop("word_counts", None)
    ALL_RECORDS.pop("word_counts", None)
    sys.modules.pop("tasks.word_count", None)


def test_the_pipeline_checks_what_a_stage_reads_and_where_its_section_is(word_count_stage, monkeypatch):
    pipeline = Pipeline.from_settings(load_settings("local-cpu"))
    assert pipeline.names == PIPELINE and pipeline.producer("word_counts") == "word_count"
    assert "word_counts" in VIDEO_TABLES  # its table is a table of every committed video now
    monkeypatch.setenv("SAVEN_PIPELINE", json.dumps(["acquire", "probe", "audio", "segment", "word_count"]))
    with pytest.raises(PipelineError, match=r"'word_count' reads \['speech'\], which no stage before it writes"):
        Pipeline.from_settings(load_settings("local-cpu"))
    monkeypatch.setenv("SAVEN_PIPELINE", json.dumps(PIPELINE))
    monkeypatch.setenv("SAVEN_STAGES", json.dumps({"word_count": {}, "wordcount": {"min_chars": 2}}))
    with pytest.raises(PipelineError, match="'wordcount'.* belong to no stage"):
        Pipeline.from_settings(load_settings("local-cpu"))


@pytest.mark.flow
@pytest.mark.prefect
@pytest.mark.slow
def test_a_new_stage_lands_its_table_and_its_report_row(word_count_stage, prefect_server, shared_media, tmp_path):
    from flows.build_dataset import build_dataset

    sources = tmp_path / "sources.yaml"
    sources.write_text(f"- {shared_media / 'big_buck_bunny_0_30.webm'}\n")
    dataset = tmp_path / "ds"
    summary = build_dataset(sources=str(sources), output=str(dataset), batch_size=1)
    assert summary["videos_ok"] == 1 and summary["videos_failed"] == 0

    (marker,) = committed(dataset).values()
    clips = read_table(dataset, "clips").to_pylist()
    counts = read_table(dataset, "word_counts").to_pylist()
    assert [r["clip_id"] for r in counts] == [c["clip_id"] for c in clips] and marker.rows["word_counts"] == len(clips)
    assert all(r["video_id"] == marker.video_id and r["words"] >= 0 for r in counts)
    assert not (dataset / "descriptions").exists() or not read_table(dataset, "descriptions").num_rows

    stats = summary["stages"]["word_count"]
    assert stats["videos"] == 1 and stats["rows"] == {"word_counts": len(clips)} and stats["failed"] == 0
    row = next(line for line in summary["report"].splitlines() if line.startswith("| word_count |"))
    assert row.startswith(f"| word_count | driver | - | 1 | 0 | 0 | word_counts {len(clips)} | 0 |")
    assert "word_counts" in (dataset / "README.md").read_text()  # the card lists the table and its rows
