"""The LLM stages' side of the stage contract: ``setup`` opens the batch's client, ``process`` is a coroutine, and a
batch's videos are all in flight at once through that one client, so the server batches their requests.

The client bounds the requests in flight (``llm.max_concurrency``), retries, and answers repeats from the run's
request cache; ``teardown`` closes it and hands its counters (requests, tokens, cache hits) to the stage's stats.
"""

from __future__ import annotations

import asyncio
import time

from infra.llm_client import LLMClient, run_with_client
from infra.stage import Stage
from schemas.handoff import StageResult, VideoItem


class LLMStage(Stage):
    placement = "llm"

    def setup(self) -> None:
        self.client = LLMClient.from_settings(self.context.settings.llm, cache_path=self.context.llm_cache)

    @property
    def model_name(self) -> str:
        return self.client.model

    async def process_async(self, item: VideoItem) -> StageResult:
        raise NotImplementedError(f"LLM stage {self.name!r} has no process_async()")

    def process(self, item: VideoItem) -> StageResult:
        return self.run_many([item])[0]

    def run_many(self, items: list[VideoItem]) -> list[StageResult]:
        """Every video at once; one that raises is its own dead letter. Each result's seconds are its own wall time
        (they overlap: the stage's time for the batch is the batch's wall time, which the runner measures)."""
        async def one(item: VideoItem) -> StageResult:
            started = time.perf_counter()
            try:
                outcome: StageResult | Exception = await self.process_async(item)
            except Exception as exc:  # noqa: BLE001 — one bad video is a dead letter, never a crash
                outcome = exc
            return self.result_of(item, outcome, started)

        async def work(_: LLMClient) -> list[StageResult]:
            return list(await asyncio.gather(*(one(i) for i in items)))

        results = run_with_client(self.client, work)
        self._worker.videos += len(items)
        self._worker.clips += sum(len(item.clips) for item in items)
        return results

    def teardown(self) -> dict[str, float]:
        self.client.close()
        return dict(self.client.stats.snapshot())

