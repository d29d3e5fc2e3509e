"""Backend registries: adding a captioner is one new file with a registered class plus one profile line; a kind
that no backend has is an error that lists the known ones, before any work starts."""

from __future__ import annotations

import sys
import textwrap

import pytest

import tasks.captioners
from infra.pipeline import Pipeline, PipelineError
from infra.registry import Registry
from perception_sample import prepared_sample
from schemas.handoff import VideoItem
from schemas.settings import load_settings
from tasks.captioners import CAPTIONERS
from tasks.visual_caption import VisualCaptionStage

# Every backend choice of the built-in pipeline: (section, field) -> the registry that must know the name.
BACKEND_FIELDS = {(s.section, s.backend_field): s.backends
                  for s in Pipeline.from_settings(load_settings("local-cpu")).stages if s.backends is not None}

THROWAWAY = textwrap.dedent('''
    """A throwaway captioner: names each keyframe's size (a test writes this file, then removes it)."""

    from tasks.captioners import CAPTIONERS


    @CAPTIONERS.register("frame-size")
    class FrameSizeCaptioner:
        name = "frame-size-v0"

        def __init__(self, cfg=None):
            self.cfg = cfg

        def describe(self, frames):
            return [(f"a frame {f.shape[1]} pixels wide", []) for f in frames]
''')


@pytest.fixture
def throwaway_backend(tmp_path, monkeypatch):
    """The new file, in a folder that joins the captioners package (as if it had been added to the tree)."""
    (tmp_path / "frame_size.py").write_text(THROWAWAY)
    monkeypatch.setattr(tasks.captioners, "__path__", [*tasks.captioners.__path__, str(tmp_path)])
    yield
    CAPTIONERS.unregister("frame-size")
    sys.modules.pop("tasks.captioners.frame_size", None)


def test_a_new_captioner_is_one_file_and_one_profile_line(throwaway_backend, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SAVEN_VISUAL_CAPTIONER__KIND", "frame-size")  # the profile line
    cfg = load_settings("local-cpu")
    Pipeline.from_settings(cfg)  # the flow's own check accepts it
    assert "frame-size" in CAPTIONERS.names()

    sample = prepared_sample(tmp_path_factory.getbasetemp() / "perception-sample")
    stage = VisualCaptionStage.standalone(settings=cfg)
    clip = sample.clips[0]
    out = stage.run(VideoItem.in_folder(sample.dataset_dir, sample.video_id, [clip]))
    captions = out.tables["visual_captions"]
    assert not out.dead_letters and len(captions) == len(clip.keyframe_times)
    assert {c.captioner for c in captions} == {"frame-size-v0"}
    assert all(c.text.startswith("a frame ") and c.text.endswith(" pixels wide") for c in captions)
    assert stage.worker_stats().model == "frame-size-v0" and stage.worker_stats().videos == 1


@pytest.mark.parametrize(("section", "field"), sorted(BACKEND_FIELDS))
def test_an_unknown_kind_fails_before_the_run_and_lists_the_known(section, field, monkeypatch):
    monkeypatch.setenv(f"SAVEN_{section.upper()}__{field.upper()}", "no-such-backend")
    cfg = load_settings("local-cpu")
    with pytest.raises(PipelineError) as err:
        Pipeline.from_settings(cfg)
    known = BACKEND_FIELDS[(section, field)].names()
    assert known and "'no-such-backend'" in str(err.value)
    assert all(name in str(err.value) for name in known)


def test_every_profile_names_registered_backends():
    for profile in ("local-cpu", "gpu-cluster"):
        Pipeline.from_settings(load_settings(profile))


def test_a_name_registered_twice_is_an_error():
    registry: Registry[type] = Registry("thing")

    @registry.register("a")
    class A:
        pass

    registry.register("a")(A)  # the same class again (a module imported twice) is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(type("B", (), {}))
    assert registry.get("a") is A and registry.names() == ["a"]
