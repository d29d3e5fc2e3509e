"""Backend registries: adding a captioner is one new file with a registered class plus one profile line; a kind
that no backend has is an error that lists the known ones, before any work starts."""

from __future__ import annotations

import sys
import textwrap

import pytest

import tasks.captioners
from flows.video_pipeline import BACKEND_FIELDS, check_backends
from infra.registry import Registry, UnknownBackendError
from perception_sample import prepared_sample
from schemas.handoff import VideoWork
from schemas.settings import load_settings
from tasks.captioners import CAPTIONERS
from tasks.visual_caption import VisualCaptionWorker

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
    check_backends(cfg)  # the flow's own check accepts it
    assert "frame-size" in CAPTIONERS.names()

    sample = prepared_sample(tmp_path_factory.getbasetemp() / "perception-sample")
    worker = VisualCaptionWorker(cfg.visual_captioner)
    clip = sample.clips[0]
    out = worker.run(VideoWork(dataset_dir=str(sample.dataset_dir), video_id=sample.video_id, clips=[clip]))
    assert not out.dead_letters and len(out.captions) == len(clip.keyframe_times)
    assert {c.captioner for c in out.captions} == {"frame-size-v0"}
    assert all(c.text.startswith("a frame ") and c.text.endswith(" pixels wide") for c in out.captions)
    assert worker.stats().model == "frame-size-v0" and worker.stats().videos == 1


@pytest.mark.parametrize(("section", "field"), sorted(BACKEND_FIELDS))
def test_an_unknown_kind_fails_before_the_run_and_lists_the_known(section, field, monkeypatch):
    monkeypatch.setenv(f"SAVEN_{section.upper()}__{field.upper()}", "no-such-backend")
    cfg = load_settings("local-cpu")
    with pytest.raises(UnknownBackendError) as err:
        check_backends(cfg)
    known = BACKEND_FIELDS[(section, field)].names()
    assert known and "'no-such-backend'" in str(err.value)
    assert all(name in str(err.value) for name in known)


def test_every_profile_names_registered_backends():
    for profile in ("local-cpu", "gpu-cluster"):
        check_backends(load_settings(profile))


def test_a_name_registered_twice_is_an_error():
    registry: Registry[type] = Registry("thing")

    @registry.register("a")
    class A:
        pass

    registry.register("a")(A)  # the same class again (a module imported twice) is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(type("B", (), {}))
    assert registry.get("a") is A and registry.names() == ["a"]
