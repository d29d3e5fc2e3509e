"""The OpenAI clients of a perception stage's model servers (``settings.ModelEndpoint``): its replicas, or its one
base URL. Requests go round the replicas; a replica that does not answer (connection refused, timed out, 5xx after
the client's own retries) is stepped around for the next one, and only when none answers does the request fail.

The fusion and QA client (``infra.llm_client``) is asynchronous and tracks requests in flight per replica; the
perception backends call from worker threads, so a turn taken in order spreads them evenly enough.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from infra.errors import TransientError
from schemas.settings import ModelEndpoint


class ServerUnavailable(RuntimeError):
    """No server of the endpoint answered (down, overloaded, timed out) after the client's retries: a rerun may
    succeed, so the stage files the item's dead letter as transient and the video is not committed with the hole."""


class EndpointPool:
    def __init__(self, endpoint: ModelEndpoint):
        from openai import OpenAI

        key = endpoint.api_key.get_secret_value() if endpoint.api_key is not None else "EMPTY"
        self.endpoint = endpoint
        urls = endpoint.endpoints
        # With several replicas the next one is the retry: a hung node costs one timeout, not every retry's.
        retries = endpoint.max_retries if len(urls) == 1 else min(1, endpoint.max_retries)
        self.clients = [OpenAI(base_url=url, api_key=key, timeout=endpoint.timeout_s, max_retries=retries)
                        for url in urls]
        self._turn = itertools.count()  # next() on a count is atomic under the GIL: threads take distinct turns

    def chat(self, **request: Any):
        """``chat.completions.create(model=<the endpoint's>, **request)`` on the next replica that answers."""
        import openai

        first = next(self._turn)
        failure: Exception | None = None
        for k in range(len(self.clients)):
            client = self.clients[(first + k) % len(self.clients)]
            try:
                return client.chat.completions.create(model=self.endpoint.model, **request)
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as exc:
                failure = exc  # this replica is down or overloaded: the next one may answer
        raise ServerUnavailable(f"no server of {', '.join(self.endpoint.endpoints)} answered: "
                                f"{type(failure).__name__}: {failure}")


class ServedModelBackend:
    """A backend whose model runs on its own servers (the ``vlm`` captioner, the ``omni`` describer): its section's
    ``endpoint_field`` holds the endpoint; it loads nothing itself, and sends ``endpoint.concurrency`` requests at
    once through one pool of the servers."""

    endpoint_field: ClassVar[str]  # also its name's prefix ("vlm:<served model>")

    @staticmethod
    def models(cfg: Any) -> list[str]:
        return []  # served by its own vLLM server, which prefetches its weights on its node

    def __init__(self, cfg: Any):
        self.cfg = getattr(cfg, self.endpoint_field)
        self.servers = EndpointPool(self.cfg)
        self.pool = ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix=self.endpoint_field)
        self.name = f"{self.endpoint_field}:{self.cfg.model}"


def unavailable_as_transient(exc: ServerUnavailable, stage: str, video_id: str, item_id: str) -> TransientError:
    """The item's transient error for a stage whose model servers did not answer."""
    return TransientError(stage, video_id, str(exc), item_id=item_id, error_class="server_unavailable")
