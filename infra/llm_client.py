"""One client for every LLM request of the pipeline: any OpenAI-compatible server (vLLM on CPU or GPU).

What it adds over the ``openai`` SDK:
- JSON-schema decoding from a pydantic model (``response_format`` json_schema, strict) and validation of the reply
  (``complete_json``), or a plain-text reply turned into a value by a parser of the caller's (``complete_text``:
  no grammar, for replies code checks anyway);
- bounded concurrency (a semaphore) so the server sees enough parallel requests to batch, but never unbounded;
- retries with exponential backoff (tenacity) on 5xx, 408/409/429, timeouts, connection errors and replies that
  fail validation (those a bounded number of times, each retry with a different seed);
- an sqlite request cache keyed by a hash of (model, messages, schema, sampling): a rerun or a resumed run never
  re-sends a request that once got a validated reply, nor one whose replies stayed invalid after every retry (its
  last reply is kept apart and replayed as the same failure, so a resumed run decides as the first did);
- counters (requests sent, cache hits, failures, tokens) and per-request usage, so a caller can report throughput
  and a test can assert "zero new requests".
A request that still fails raises ``LLMTransientError`` / ``LLMPermanentError`` (``infra.errors`` kinds) with the
attempt count.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

import openai
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_any, wait_exponential_jitter

from schemas.settings import LLM
from infra.errors import PermanentError, TransientError
from infra.sqlite_store import SqliteStore

T = TypeVar("T", bound=BaseModel)

CACHE_FILE_NAME = "llm_cache.sqlite"
FAILED_PREFIX = "failed:"  # cache key of a request's final invalid reply (replayed, never re-sampled)
TRANSIENT_STATUS = frozenset({408, 409, 429})


class InvalidReply(Exception):
    """The server answered, but the content is not a valid instance of the requested schema. ``content``: the reply
    when it never reached decoding (cut at max_tokens), so that it is recorded like any other last word."""

    def __init__(self, message: str, content: str | None = None):
        super().__init__(message)
        self.content = content


class MalformedResponse(Exception):
    """The server's HTTP reply is not a chat completion at all (e.g. a cut-off JSON body): the server's fault, not
    the model's, so it is retried like a 5xx and never counts as an invalid reply."""


class LLMTransientError(TransientError):
    """An LLM request that may succeed later (5xx, 429, timeouts); carries its attempt count."""


class LLMPermanentError(PermanentError):
    """An LLM request that retrying cannot fix (4xx, replies that never fit the schema)."""


@dataclass
class LLMStats:
    requests_sent: int = 0  # HTTP requests that reached the wire, retries included
    cache_hits: int = 0
    completed: int = 0  # calls answered by the server with a validated reply
    failures: int = 0  # calls that raised after their retries
    retries: int = 0
    invalid_replies: int = 0
    prompt_tokens: int = 0  # all answered requests, rejected replies included
    completion_tokens: int = 0
    in_flight: int = 0  # gauge: requests waiting for the server right now
    failovers: int = 0  # requests a replica failed to answer, retried on another

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class RequestUsage:
    """One logical request: the tokens of the reply that was used, and how many attempts it took."""

    key: str
    schema_name: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int  # 0 for a cache hit
    cached: bool
    seconds: float


@dataclass(frozen=True)
class LLMReply(Generic[T]):
    value: T
    usage: RequestUsage


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the plain form structured-output backends accept everywhere.

    Pydantic emits ``$defs``/``$ref`` for nested models, ``const`` for one-value literals and a ``title`` on every
    node; grammar compilers differ in how much of that they support, so refs are inlined, ``const`` becomes a
    one-value ``enum`` and titles go.

    ``maxLength`` goes too: xgrammar (vLLM's default backend) unrolls a bounded string into an automaton that takes
    seconds to compile per field (measured: 7 s for one 400-character field, 15-19 s for a QA reply, against 0.03 s
    unbounded), and requests wait for it; per-video schemas would pay it for every video. The length is still
    enforced: the reply is validated against the pydantic model, and ``max_tokens`` bounds what the model writes.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]))
            # keywords only: a property that happens to be called "title" has a schema (a dict), not a string
            out = {k: walk(v) for k, v in node.items()
                   if not (k in ("title", "maxLength") and not isinstance(v, dict))}
            if "const" in out:
                out["enum"] = [out.pop("const")]
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def request_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class RequestCache(SqliteStore):
    """Validated replies by request key, in one sqlite file that several processes may share (WAL)."""

    TABLE = "replies"
    SCHEMA = ("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT NOT NULL, schema_name TEXT NOT "
              "NULL, content TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
              " created_at REAL NOT NULL)")

    def get(self, key: str) -> tuple[str, int, int] | None:
        row = self.one("SELECT content, prompt_tokens, completion_tokens FROM replies WHERE key = ?", (key,))
        return None if row is None else (row[0], int(row[1]), int(row[2]))

    def put(self, key: str, *, model: str, schema_name: str, content: str, prompt_tokens: int,
            completion_tokens: int) -> str:
        """Store ``content`` unless the key already has a reply; returns the reply stored for the key.

        The first writer wins: two requests with the same key can be in flight at once (two clips whose prompts
        are identical, in batches that run side by side, possibly in two processes), and a server that samples
        without a seed answers them differently. Both callers then use the one stored reply, so a rerun, which
        reads it from here, rebuilds exactly what the first run wrote.
        """
        row = self.execute(
            ("INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
             (key, model, schema_name, content, prompt_tokens, completion_tokens, time.time())),
            ("SELECT content FROM replies WHERE key = ?", (key,)))
        return content if row is None else row[0]

    def delete(self, key: str) -> None:
        self.execute(("DELETE FROM replies WHERE key = ?", (key,)))

    COLUMNS = ("key", "model", "schema_name", "content", "prompt_tokens", "completion_tokens", "created_at")

    def rows_since(self, created_at: float) -> list[tuple]:
        """Every reply stored at or after ``created_at`` (seconds since the epoch), oldest first."""
        with self._lock:
            return self._db.execute(f"SELECT {', '.join(self.COLUMNS)} FROM replies WHERE created_at >= ? "
                                    "ORDER BY created_at, key", (created_at,)).fetchall()

    def add_rows(self, rows: list[tuple]) -> int:
        """Replies from elsewhere (a cache shard of an earlier run); a key already here keeps its reply."""
        with self._lock:
            before = self._db.total_changes
            self._db.executemany(f"INSERT OR IGNORE INTO replies VALUES ({', '.join('?' * len(self.COLUMNS))})",
                                 rows)
            return self._db.total_changes - before


REPLICA_REST_S = 15.0  # a replica that failed to answer gets no request for this long
CONNECT_TIMEOUT_S = 5.0  # to open a connection to a replica (a reply may take the whole timeout_s)


@dataclass
class _Replica:
    """One server of the model, and how it has been doing."""

    url: str
    sdk: openai.AsyncOpenAI | None = None
    in_flight: int = 0
    sent: int = 0
    resting_until: float = 0.0


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (InvalidReply, MalformedResponse, openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in TRANSIENT_STATUS
    return False


class LLMClient:
    """Async JSON-schema completions with concurrency bound, retries, cache and counters.

    Use inside one event loop at a time; the SDK client and semaphore are (re)made for the running loop, so a
    synchronous caller may drive it with several ``asyncio.run`` calls in sequence.
    """

    def __init__(self, *, base_url: str | Sequence[str], model: str, api_key: str = "EMPTY", max_concurrency: int = 8,
                 timeout_s: float = 120.0, max_retries: int = 4, max_invalid_retries: int = 2,
                 temperature: float = 0.2, max_tokens: int = 768, seed: int = 0, frequency_penalty: float = 0.0,
                 send_seed: bool = True, cache_path: Path | None = None,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 16.0):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        # One or several servers of the same model (replicas): each request goes to the one with the fewest in
        # flight; one that fails to answer is stepped around for REPLICA_REST_S and the request retried elsewhere.
        self.replicas = [_Replica(url) for url in ([base_url] if isinstance(base_url, str) else list(base_url))]
        if not self.replicas:
            raise ValueError("no LLM server to talk to")
        self.model = model
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_invalid_retries = min(max_invalid_retries, max_retries)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.frequency_penalty = frequency_penalty
        self.send_seed = send_seed
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.cache = RequestCache(cache_path) if cache_path is not None else None
        self.stats = LLMStats()
        self.usage: list[RequestUsage] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None

    @classmethod
    def from_settings(cls, llm: LLM, *, cache_path: Path | None, **overrides: Any) -> "LLMClient":
        params: dict[str, Any] = dict(
            base_url=llm.endpoints, model=llm.resolved_model, api_key=llm.api_key.get_secret_value(),
            max_concurrency=llm.max_concurrency, timeout_s=llm.timeout_s, max_retries=llm.max_retries,
            temperature=llm.temperature, max_tokens=llm.max_tokens, seed=llm.seed, cache_path=cache_path,
            # Small models loop ("The dog is playing. The dog is playing. ..."); a frequency penalty stops that.
            # Read defensively until settings.LLM has the field (0.0 = the server's default behaviour).
            frequency_penalty=getattr(llm, "frequency_penalty", 0.0),
            # vLLM CPU (0.32) kills its engine when a seeded request's prefill is split over scheduler steps
            # ("CPU Generator does not use offset"), which concurrent or long prompts cause: never send it a seed.
            send_seed=llm.server.kind != "vllm-cpu",
        )
        params.update(overrides)
        return cls(**params)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def _bind_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._semaphore is None or any(r.sdk is None for r in self.replicas):
            for r in self.replicas:
                # The SDK's retries are off: tenacity owns them, so attempts are counted in one place.
                # A replica that drops packets is found in seconds, not after a whole reply's timeout.
                timeout = openai.Timeout(self.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.timeout_s))
                r.sdk = openai.AsyncOpenAI(base_url=r.url, api_key=self.api_key, timeout=timeout, max_retries=0)
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._semaphore

    def _pick(self) -> "_Replica":
        """The replica for the next request: among those not resting after a failure, the one with the fewest
        requests in flight (all resting: the one whose rest ends first)."""
        now = time.monotonic()
        up = [r for r in self.replicas if r.resting_until <= now]
        if not up:
            return min(self.replicas, key=lambda r: r.resting_until)
        return min(up, key=lambda r: (r.in_flight, r.sent))

    async def aclose(self) -> None:
        for r in self.replicas:
            if r.sdk is not None and self._loop is asyncio.get_running_loop():
                await r.sdk.close()
            r.sdk = None
        self._semaphore = None
        self._loop = None

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    async def __aenter__(self) -> "LLMClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- requests --------------------------------------------------------------------------------------------

    def sampling(self, *, max_tokens: int | None = None, seed: int | None = None,
                 temperature: float | None = None) -> dict[str, Any]:
        return {"temperature": self.temperature if temperature is None else temperature,
                "max_tokens": max_tokens or self.max_tokens,
                "seed": self.seed if seed is None else seed, "frequency_penalty": self.frequency_penalty}

    async def complete_json(self, messages: list[dict[str, str]], response_model: type[T], *, schema_name: str,
                            stage: str, subject: str, item_id: str | None = None,
                            validate: Callable[[T], None] | None = None, max_tokens: int | None = None,
                            seed: int | None = None, temperature: float | None = None,
                            max_invalid_retries: int | None = None) -> LLMReply[T]:
        """The reply to ``messages`` decoded against ``response_model``'s JSON schema.

        ``validate`` may raise ``ValueError`` for a reply that is schema-valid but unusable; that counts as an
        invalid reply (retried, never cached). ``seed`` and ``temperature`` override the configured ones, e.g. to
        ask for a second, different candidate; like all sampling they are part of the cache key.
        ``max_invalid_retries`` overrides the client's for this call (a caller with a fallback of its own retries
        less).
        """
        schema = strict_json_schema(response_model)
        response_format = {"type": "json_schema",
                           "json_schema": {"name": schema_name, "schema": schema, "strict": True}}

        def decode(content: str) -> T:
            return self._validate(content, response_model, validate)

        return await self._complete(messages, response_format, {"schema": schema}, decode, schema_name=schema_name,
                                    stage=stage, subject=subject, item_id=item_id, max_tokens=max_tokens, seed=seed,
                                    temperature=temperature, max_invalid_retries=max_invalid_retries)

    async def complete_text(self, messages: list[dict[str, str]], parse: Callable[[str], T], *, reply_name: str,
                            stage: str, subject: str, item_id: str | None = None, max_tokens: int | None = None,
                            seed: int | None = None, temperature: float | None = None,
                            max_invalid_retries: int | None = None, accept_cut: bool = False) -> LLMReply[T]:
        """The reply to ``messages`` as plain text, turned into a value by ``parse`` (which raises ``ValueError`` for
        a reply it cannot use: retried like a schema-invalid one, never cached).

        No grammar constrains the decoding: for a reply that code checks anyway (one sentence, numbered lines),
        a grammar only costs time (on a CPU server each request waits for its grammar to be built before it is
        scheduled) and tokens (the JSON frame). ``reply_name`` names the format in the cache key and counters.
        ``accept_cut``: a reply cut at ``max_tokens`` goes to the parser as it is (an answer whose first words are
        all that matters) instead of counting as invalid."""

        def decode(content: str) -> T:
            try:
                return parse(content)
            except ValueError as exc:
                raise InvalidReply(f"{exc}; reply: {content[:300]!r}") from exc

        return await self._complete(messages, None, {"text_reply": reply_name}, decode, schema_name=reply_name,
                                    stage=stage, subject=subject, item_id=item_id, max_tokens=max_tokens, seed=seed,
                                    temperature=temperature, max_invalid_retries=max_invalid_retries,
                                    accept_cut=accept_cut)

    async def _complete(self, messages: list[dict[str, str]], response_format: dict[str, Any] | None,
                        key_extra: dict[str, Any], decode: Callable[[str], T], *, schema_name: str, stage: str,
                        subject: str, item_id: str | None, max_tokens: int | None, seed: int | None,
                        temperature: float | None, max_invalid_retries: int | None,
                        accept_cut: bool = False) -> LLMReply[T]:
        invalid_limit = self.max_invalid_retries if max_invalid_retries is None else \
            min(max_invalid_retries, self.max_retries)
        sampling = self.sampling(max_tokens=max_tokens, seed=seed, temperature=temperature)
        key = request_key({"model": self.model, "messages": messages, **key_extra, "sampling": sampling})

        cached = self._from_cache(key, decode, schema_name)
        if cached is not None:
            return cached
        replayed = self._replay_failure(key, decode, schema_name, stage, subject, item_id)
        if replayed is not None:
            return replayed

        started = time.perf_counter()
        invalid_seen = 0
        attempts = 0
        last_content: str | None = None

        def stop_on_invalid(retry_state) -> bool:
            return invalid_seen > invalid_limit

        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.max_retries + 1), stop_on_invalid),
            wait=wait_exponential_jitter(initial=self.backoff_initial_s, max=self.backoff_max_s),
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if attempts > 1:
                        self.stats.retries += 1
                    # A server with a fixed seed repeats a broken reply; each retry after one asks with a new seed.
                    attempt_sampling = dict(sampling, seed=sampling["seed"] + invalid_seen)
                    try:
                        content, prompt_tokens, completion_tokens = await self._send(
                            messages, response_format, attempt_sampling, accept_cut=accept_cut)
                        last_content = content
                        value = decode(content)
                    except InvalidReply as exc:
                        invalid_seen += 1
                        self.stats.invalid_replies += 1
                        if exc.content is not None:  # cut before decoding: still the model's last word
                            last_content = exc.content
                        raise
        except (InvalidReply, MalformedResponse, openai.OpenAIError) as exc:
            self.stats.failures += 1
            if isinstance(exc, InvalidReply) and self.cache is not None and last_content is not None:
                # The model's last word on this request: a rerun replays it instead of sampling anew, so a resumed
                # run rebuilds exactly what the first run decided (a reply the rules now accept is used then).
                self.cache.put(FAILED_PREFIX + key, model=self.model, schema_name=schema_name, content=last_content,
                               prompt_tokens=0, completion_tokens=0)
            raise self._as_stage_error(exc, stage, subject, item_id, attempts, schema_name) from exc

        usage = RequestUsage(key=key, schema_name=schema_name, prompt_tokens=prompt_tokens,
                             completion_tokens=completion_tokens, attempts=attempts, cached=False,
                             seconds=time.perf_counter() - started)
        self.stats.completed += 1
        self.usage.append(usage)
        if self.cache is not None:
            stored = self.cache.put(key, model=self.model, schema_name=schema_name, content=content,
                                    prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            if stored != content:  # the same request, answered first elsewhere: use that answer, as a rerun will
                try:
                    value = decode(stored)
                except InvalidReply:  # stored under other rules; a rerun asks again (``_from_cache`` drops it)
                    pass
        return LLMReply(value=value, usage=usage)

    def _replay_failure(self, key: str, decode: Callable[[str], T], schema_name: str, stage: str, subject: str,
                        item_id: str | None) -> LLMReply[T] | None:
        """Raise the request's recorded final failure again, without sending it. None when there is none; the reply
        when the recorded one decodes under today's rules (it becomes the cached reply)."""
        if self.cache is None:
            return None
        hit = self.cache.get(FAILED_PREFIX + key)
        if hit is None:
            return None
        try:
            decode(hit[0])
        except InvalidReply as exc:
            self.stats.failures += 1
            self.stats.cache_hits += 1
            raise LLMPermanentError(stage, subject, f"LLM request {schema_name!r} failed: invalid reply (the recorded "
                                    f"reply of an earlier run)", item_id=item_id, detail=str(exc)[:2000],
                                    error_class="InvalidReply", attempts=1) from exc
        self.cache.delete(FAILED_PREFIX + key)
        self.cache.put(key, model=self.model, schema_name=schema_name, content=hit[0], prompt_tokens=hit[1],
                       completion_tokens=hit[2])
        return self._from_cache(key, decode, schema_name)

    def _from_cache(self, key: str, decode: Callable[[str], T], schema_name: str) -> LLMReply[T] | None:
        if self.cache is None:
            return None
        hit = self.cache.get(key)
        if hit is None:
            return None
        content, prompt_tokens, completion_tokens = hit
        try:
            value = decode(content)
        except InvalidReply:
            # Validation rules may have tightened since the reply was cached: ask the server again.
            self.cache.delete(key)
            return None
        self.stats.cache_hits += 1
        usage = RequestUsage(key=key, schema_name=schema_name, prompt_tokens=prompt_tokens,
                             completion_tokens=completion_tokens, attempts=0, cached=True, seconds=0.0)
        self.usage.append(usage)
        return LLMReply(value=value, usage=usage)

    async def _send(self, messages: list[dict[str, str]], response_format: dict[str, Any] | None,
                    sampling: dict[str, Any], *, accept_cut: bool = False) -> tuple[str, int, int]:
        semaphore = self._bind_loop()
        if not self.send_seed:
            # The seed still tells requests apart in the cache key; without it the server samples freshly,
            # which is what a retry after a broken reply needs anyway.
            sampling = {k: v for k, v in sampling.items() if k != "seed"}
        async with semaphore:
            replica = self._pick()
            self.stats.requests_sent += 1
            self.stats.in_flight += 1
            replica.in_flight += 1
            replica.sent += 1
            try:
                fmt = {"response_format": response_format} if response_format is not None else {}
                completion = await replica.sdk.chat.completions.create(model=self.model, messages=messages, **fmt,
                                                                       **sampling)
            except json.JSONDecodeError as exc:  # the SDK parses the body after the status: a 200 can still be junk
                raise MalformedResponse(f"the server's reply is not JSON: {exc}") from exc
            except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError):
                # A server that is down or failing: the retry goes to another replica while this one rests.
                if len(self.replicas) > 1:
                    replica.resting_until = time.monotonic() + REPLICA_REST_S
                    self.stats.failovers += 1
                raise
            finally:
                self.stats.in_flight -= 1
                replica.in_flight -= 1
        usage = getattr(completion, "usage", None)
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        # Every token the server spent counts, including those of replies rejected below.
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        choices = getattr(completion, "choices", None)
        if not choices:
            raise InvalidReply("the server returned no choices")
        choice = choices[0]
        content = choice.message.content
        if choice.finish_reason == "length" and not accept_cut:
            raise InvalidReply(f"reply cut at max_tokens={sampling['max_tokens']}: {str(content)[:200]!r}",
                               content=content or None)
        if not content:
            raise InvalidReply("the reply has no content")
        return content, prompt_tokens, completion_tokens

    @staticmethod
    def _validate(content: str, response_model: type[T], validate: Callable[[T], None] | None) -> T:
        try:
            value = response_model.model_validate_json(content)
            if validate is not None:
                validate(value)
        except (ValidationError, ValueError) as exc:
            raise InvalidReply(f"{exc}; reply: {content[:300]!r}") from exc
        return value

    @staticmethod
    def _as_stage_error(exc: BaseException, stage: str, subject: str, item_id: str | None, attempts: int,
                        schema_name: str) -> LLMTransientError | LLMPermanentError:
        attempts = max(attempts, 1)
        what = f"LLM request {schema_name!r} failed after {attempts} attempt(s)"
        if isinstance(exc, InvalidReply):
            return LLMPermanentError(stage, subject, f"{what}: invalid reply", item_id=item_id,
                                     detail=str(exc)[:2000], error_class="InvalidReply", attempts=attempts)
        if _is_retryable(exc):
            return LLMTransientError(stage, subject, f"{what}: {type(exc).__name__}: {exc}", item_id=item_id,
                                     error_class=type(exc).__name__, attempts=attempts)
        # A 4xx (bad request, unknown model, context too long) or a malformed response: retrying cannot help.
        status = f"HTTP {exc.status_code}: " if isinstance(exc, openai.APIStatusError) else ""
        return LLMPermanentError(stage, subject, f"{what}: {status}{exc}", item_id=item_id,
                                 error_class=type(exc).__name__, attempts=attempts)


def run_sync(coro: Awaitable[T]) -> T:
    """Run ``coro`` to completion from sync code, also when the caller is itself inside an event loop (a Prefect
    task, a notebook): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def run_with_client(client: LLMClient, work: Callable[[LLMClient], Awaitable[T]]) -> T:
    """``work(client)`` to completion from sync code, the client's HTTP session closed after it (its request cache
    stays open for the next call; ``client.close()`` closes it)."""
    async def main() -> T:
        async with client:
            return await work(client)

    return run_sync(main())
