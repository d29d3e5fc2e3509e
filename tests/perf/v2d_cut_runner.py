"""Runs INSIDE the video2dataset venv made by bench_video2dataset.py (not with the project's .venv).

video2dataset's own ``CutDetectionSubsampler`` over each video given, with the arguments of a shipped config file
(``configs/downsample_ml.yaml``, the one that enables cut detection) and with the class defaults. The subsampler is
fed the video's bytes the way its subset worker feeds them (``streams["video"][0]``); its scene list is turned back
into cut times (the first frame of every scene after the first, over the fps it reports).

The subsampler module is imported without running ``video2dataset/__init__.py`` and ``subsamplers/__init__.py``:
those import every other subsampler (torch, transformers, whisperx, wandb), none of which cut detection uses.

    <v2d-venv>/bin/python v2d_cut_runner.py --repeat N VIDEO... > result.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import resource
import sys
import time
import types
from pathlib import Path

import yaml


def load_subsampler_module():
    spec = importlib.util.find_spec("video2dataset")  # finds the package without executing it
    root = Path(spec.submodule_search_locations[0])
    for name, folder in (("video2dataset", root), ("video2dataset.subsamplers", root / "subsamplers")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return importlib.import_module("video2dataset.subsamplers.cut_detection_subsampler"), root


def configurations(root: Path) -> dict[str, dict]:
    shipped = yaml.safe_load((root / "configs" / "downsample_ml.yaml").read_text())
    return {"downsample_ml.yaml": shipped["subsampling"]["CutDetectionSubsampler"]["args"], "class defaults": {}}


def cpu_seconds() -> float:
    """CPU time of this process, OpenCV's decode threads included: steadier than wall on a shared machine."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    module, root = load_subsampler_module()
    import scenedetect

    out = {"scenedetect": scenedetect.__version__, "configs": {}}
    for label, kwargs in configurations(root).items():
        subsampler = module.CutDetectionSubsampler(**kwargs)
        rows = {}
        for path in args.videos:
            data = path.read_bytes()
            best, best_cpu, cuts = float("inf"), float("inf"), None
            for _ in range(args.repeat):
                t, c = time.perf_counter(), cpu_seconds()
                _, cuts, error = subsampler({"video": [data]})
                best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, cpu_seconds() - c)
                if error:
                    raise SystemExit(f"video2dataset cut detection failed on {path}: {error}")
            fps = float(cuts["original_fps"])
            scenes = cuts["cuts_original_fps"]
            rows[str(path)] = {"seconds": best, "cpu_seconds": best_cpu, "fps": fps, "scenes": scenes,
                               "cuts_s": [start / fps for start, _ in scenes[1:]]}
        out["configs"][label] = {"args": {"cut_detection_mode": subsampler.cut_detection_mode,
                                          "threshold": subsampler.threshold,
                                          "min_scene_len": subsampler.min_scene_len,
                                          "framerates": subsampler.framerates}, "videos": rows}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
