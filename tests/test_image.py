"""The GPU image's dependency set resolves for the image's Python and platform (no registry of images is reachable
here, so the image itself is not built): the project's dependencies, vLLM 0.33.0 (the base image's), Ray and the
CUDA 12 libraries of CTranslate2, for CPython 3.12 on manylinux x86_64, resolve to exactly the pinned lock that the
Dockerfile installs. The set is resolved with the lock as constraints: the registry publishes new releases every day
(even ones dated before `--exclude-newer`'s day reach a mirror late), and a lock that newer releases could replace is
still a valid lock; `make image-lock` refreshes it on purpose. What fails here: a set that is unsatisfiable with the
locked versions, or a dependency the lock lacks or no longer needs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\[\]-]+)==(\S+)", text, re.MULTILINE))


def test_the_image_dependency_set_resolves_to_its_lock(tmp_path):
    make = (REPO / "Makefile").read_text()
    resolve = re.search(r"^IMAGE_RESOLVE := (.+?)(?<!\\)$", make, re.MULTILINE | re.DOTALL)[1]
    args = resolve.replace("\\\n", " ").split()
    out = tmp_path / "lock.txt"
    done = subprocess.run([str(Path(sys.executable).with_name("uv")), "pip", "compile", "pyproject.toml",
                           "deploy/requirements-image.in", "-c", "deploy/requirements-image.txt", *args,
                           "-o", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]  # e.g. "No solution found when resolving dependencies"
    resolved, locked = pins(out.read_text()), pins((REPO / "deploy" / "requirements-image.txt").read_text())
    assert resolved == locked, {k: (resolved.get(k), locked.get(k)) for k in set(resolved) | set(locked)
                                if resolved.get(k) != locked.get(k)}
    # the pairs the image depends on: the base image's vLLM and its torch, one Ray everywhere
    assert locked["vllm"] == "0.33.0" and locked["torch"].startswith("2.14.") and locked["ray"] == "2.60.0"
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "FROM vllm/vllm-openai:v0.33.0" in dockerfile and "-r deploy/requirements-image.txt" in dockerfile
