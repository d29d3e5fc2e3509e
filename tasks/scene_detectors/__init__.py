"""Scene-cut detectors of the segment stage (``settings.segment.detector``): each entry builds a PySceneDetect
``SceneDetector`` from the profile's ``segment`` section. Register one with ``@DETECTORS.register("name")`` in a
module of this package."""

from __future__ import annotations

from typing import Callable

from scenedetect.detector import SceneDetector

from infra.registry import Registry
from schemas.settings import Segment

DETECTORS: Registry[Callable[[Segment], SceneDetector]] = Registry("scene detector", package=__name__)
