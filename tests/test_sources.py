import json

import pytest

from flows.sources import SourcesError, read_sources
from schemas.commit import source_key


def test_yaml_csv_jsonl_agree(tmp_path):
    (tmp_path / "a.yaml").write_text("sources:\n  - https://example.org/v.mp4\n  - {source: clips/b.mp4}\n")
    (tmp_path / "a.csv").write_text("source\nhttps://example.org/v.mp4\nclips/b.mp4\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"url": "https://example.org/v.mp4"}) + "\n\n"
                                      + json.dumps({"source": "clips/b.mp4"}) + "\n")
    expected = ["https://example.org/v.mp4", str(tmp_path / "clips" / "b.mp4")]
    for name in ("a.yaml", "a.csv", "a.jsonl"):
        assert read_sources(tmp_path / name) == expected


def test_duplicates_dropped_and_keys_stable(tmp_path):
    (tmp_path / "s.yaml").write_text("- /x/a.mp4\n- /x/a.mp4\n- /x/b.mp4\n")
    assert read_sources(tmp_path / "s.yaml") == ["/x/a.mp4", "/x/b.mp4"]
    assert source_key("/x/a.mp4") == source_key("/x/a.mp4") != source_key("/x/b.mp4")
    assert source_key("http://h/a.mp4;rm -rf /").startswith("src-")


@pytest.mark.parametrize("body,msg", [("- 3\n", "expected a string"), ("- '  '\n", "empty source"),
                                      ("{not: a list}\n", "expected a list")])
def test_bad_entries_are_clear_errors(tmp_path, body, msg):
    (tmp_path / "s.yaml").write_text(body)
    with pytest.raises(SourcesError, match=msg):
        read_sources(tmp_path / "s.yaml")


def test_unknown_format_and_bad_json(tmp_path):
    (tmp_path / "s.txt").write_text("x")
    with pytest.raises(SourcesError, match="unknown sources format"):
        read_sources(tmp_path / "s.txt")
    (tmp_path / "s.jsonl").write_text("{oops\n")
    with pytest.raises(SourcesError, match=r"s.jsonl:1: invalid JSON"):
        read_sources(tmp_path / "s.jsonl")
