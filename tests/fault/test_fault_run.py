"""A short `make fault`: every fault kind, the LLM chaos, three SIGKILLs and a Ray worker kill over 12 sources."""

from __future__ import annotations

import json

import pytest

from schemas.settings import settings

from .run import fault_run

pytestmark = [pytest.mark.flow, pytest.mark.llm, pytest.mark.prefect, pytest.mark.slow,
              pytest.mark.timeout(5400)]  # ~10-25 min on a 2-core machine


def test_short_fault_run_meets_every_target(llm_server, prefect_server, tmp_path):
    # The session's LLM server (the profile's SmolLM2) and every QA type: 12 videos fit the time either way, and
    # every type gives the prompt-injection video more drafts to judge.
    summary = fault_run(12, tmp_path / "fault", seed=1, chaos_window_s=60.0,
                        media_cache=settings().paths.output_dir / "fault" / "media-cache", demo_llm=False, workload={})
    missed = [name for name, ok in summary["checks"].items() if not ok]
    assert not missed, json.dumps({"missed": missed, **{k: v for k, v in summary.items() if k != "runs"}},
                                  indent=1, default=str)[:6000]
