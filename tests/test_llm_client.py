"""LLMClient against a real local HTTP server with injected faults (tests/fake_openai_server.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fake_openai_server import Fail, FakeOpenAIServer, Hang, Reply, schema_responder
from schemas.records import StageName
from schemas.settings import load_settings
from infra.llm_client import LLMClient, LLMPermanentError, LLMTransientError, strict_json_schema

REPO_ROOT = Path(__file__).resolve().parents[1]
USER = [{"role": "user", "content": "Describe the clip."}]


class Described(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: Annotated[str, StringConstraints(min_length=3, max_length=200)]


@pytest.fixture
def fake():
    with FakeOpenAIServer() as server:
        yield server


def make_client(server: FakeOpenAIServer, cache: Path | None, **kw) -> LLMClient:
    params = dict(base_url=server.base_url, model="fake-model", cache_path=cache, timeout_s=5.0, max_retries=3,
                  max_invalid_retries=2, backoff_initial_s=0.01, backoff_max_s=0.05, max_concurrency=4)
    params.update(kw)
    return LLMClient(**params)


def ask(client: LLMClient, n: int = 1, messages=USER, **kw):
    """``n`` different requests (or one), run to completion; exceptions are returned, not raised."""

    async def main():
        async with client:
            calls = [client.complete_json(messages if n == 1 else [{"role": "user", "content": f"clip {i}"}],
                                          Described, schema_name="described", stage=StageName.fuse,
                                          subject="local-v1", item_id=f"local-v1.c{i:04d}", **kw)
                     for i in range(n)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    return results[0] if n == 1 else results


def test_reply_is_decoded_validated_and_counted(fake, tmp_path):
    client = make_client(fake, tmp_path / "cache.sqlite")
    reply = ask(client)
    assert isinstance(reply.value, Described)
    body = fake.requests[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    # no maxLength in the grammar (slow to compile); the reply is validated against the model's bound instead
    assert "maxLength" not in body["response_format"]["json_schema"]["schema"]["properties"]["description"]
    assert body["model"] == "fake-model" and body["seed"] == 0
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0 and reply.usage.attempts == 1
    assert client.stats.requests_sent == 1 and client.stats.completed == 1
    assert client.stats.completion_tokens == reply.usage.completion_tokens


def test_rerun_with_the_cache_sends_zero_requests(fake, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = ask(make_client(fake, cache), n=5)
    assert fake.count == 5
    rerun_client = make_client(fake, cache)
    again = ask(rerun_client, n=5)
    assert fake.count == 5  # the server saw nothing new
    assert rerun_client.stats.requests_sent == 0 and rerun_client.stats.cache_hits == 5
    assert [r.value for r in again] == [r.value for r in first]
    assert all(r.usage.cached for r in again)


def test_cache_key_covers_sampling(fake, tmp_path):
    cache = tmp_path / "cache.sqlite"
    ask(make_client(fake, cache))
    ask(make_client(fake, cache, temperature=0.9))
    ask(make_client(fake, cache), seed=7)
    assert fake.count == 3


def test_seed_can_stay_out_of_the_request_but_still_keys_the_cache(fake, tmp_path):
    cache = tmp_path / "cache.sqlite"
    ask(make_client(fake, cache, send_seed=False), seed=1)
    ask(make_client(fake, cache, send_seed=False), seed=2)
    assert fake.count == 2 and all("seed" not in body for body in fake.requests)
    assert make_client(fake, None, send_seed=False).sampling(seed=3)["seed"] == 3


def test_server_errors_are_retried_with_backoff(fake, tmp_path):
    fake.queue += [Fail(500), Fail(503), Fail(429)]
    client = make_client(fake, tmp_path / "cache.sqlite")
    reply = ask(client)
    assert reply.usage.attempts == 4 and fake.count == 4
    assert client.stats.retries == 3 and client.stats.failures == 0


def test_persistent_errors_raise_transient_error_with_attempts_and_cache_nothing(fake, tmp_path):
    cache = tmp_path / "cache.sqlite"
    fake.responder = lambda body: Fail(500)
    client = make_client(fake, cache, max_retries=2)
    err = ask(client)
    assert isinstance(err, LLMTransientError)
    assert err.attempts == 3 and fake.count == 3
    letter = err.to_dead_letter()
    assert letter.attempts == 3 and letter.stage == StageName.fuse and letter.item_id == "local-v1.c0000"
    assert letter.error_class == "InternalServerError"
    assert client.stats.failures == 1
    fake.responder = schema_responder  # the server recovers: the failed request is asked again, not replayed
    assert isinstance(ask(make_client(fake, cache)).value, Described)
    assert fake.count == 4


def test_a_hanging_server_times_out_and_is_retried(fake, tmp_path):
    fake.queue.append(Hang(30))
    client = make_client(fake, tmp_path / "cache.sqlite", timeout_s=0.5)
    reply = ask(client)
    assert reply.usage.attempts == 2 and fake.count == 2


def test_timeouts_until_the_end_raise_transient_error(fake, tmp_path):
    fake.responder = lambda body: Hang(30)
    err = ask(make_client(fake, None, timeout_s=0.3, max_retries=1))
    assert isinstance(err, LLMTransientError) and err.attempts == 2
    assert err.error_class == "APITimeoutError"


def test_client_errors_are_permanent_and_not_retried(fake, tmp_path):
    fake.queue.append(Fail(400, "prompt too long"))
    err = ask(make_client(fake, tmp_path / "cache.sqlite"))
    assert isinstance(err, LLMPermanentError) and err.attempts == 1 and fake.count == 1
    assert "400" in err.message


def test_schema_breaking_replies_are_retried_with_new_seeds_then_fail(fake, tmp_path):
    fake.responder = lambda body: Reply('{"description": ')  # broken JSON, every time
    client = make_client(fake, tmp_path / "cache.sqlite", max_retries=5, max_invalid_retries=2)
    err = ask(client)
    assert isinstance(err, LLMPermanentError) and err.error_class == "InvalidReply"
    assert err.attempts == 3 and fake.count == 3  # bounded by max_invalid_retries, not max_retries
    assert [b["seed"] for b in fake.requests] == [0, 1, 2]  # a fixed seed would repeat the broken reply
    assert client.stats.invalid_replies == 3


def test_a_valid_reply_after_an_invalid_one_is_used_and_cached(fake, tmp_path):
    cache = tmp_path / "cache.sqlite"
    fake.queue += [Reply('{"description": 5}'), Reply('{"unexpected": "field"}')]
    client = make_client(fake, cache)
    reply = ask(client)
    assert reply.usage.attempts == 3 and reply.value.description.startswith("text for")
    assert client.stats.completion_tokens > reply.usage.completion_tokens  # rejected replies cost tokens too
    rerun = make_client(fake, cache)
    assert ask(rerun).value == reply.value and rerun.stats.requests_sent == 0


def test_a_reply_cut_at_max_tokens_is_invalid(fake, tmp_path):
    fake.queue.append(Reply('{"description": "a long', finish_reason="length"))
    reply = ask(make_client(fake, None))
    assert reply.usage.attempts == 2


def test_a_request_whose_replies_were_all_cut_is_replayed_by_a_rerun_not_sent_again(fake, tmp_path):
    """A model that never closes its JSON within max_tokens (a random-weight twin did): the request fails as an
    invalid reply, its last cut reply is recorded, and a resumed run decides the same without asking again."""
    cache = tmp_path / "c.sqlite"
    fake.responder = lambda body: Reply('{"description": "and and and', finish_reason="length")
    first = ask(make_client(fake, cache))
    assert isinstance(first, LLMPermanentError) and first.error_class == "InvalidReply"
    sent = fake.count
    again = ask(make_client(fake, cache))
    assert isinstance(again, LLMPermanentError) and again.error_class == "InvalidReply"
    assert fake.count == sent


def test_caller_validation_failures_count_as_invalid_replies(fake, tmp_path):
    def no_text_for(value: Described) -> None:
        if value.description.startswith("text for"):
            raise ValueError("placeholder text")

    err = ask(make_client(fake, tmp_path / "cache.sqlite"), validate=no_text_for)
    assert isinstance(err, LLMPermanentError) and err.error_class == "InvalidReply" and "placeholder" in err.detail


def test_concurrency_is_bounded(fake, tmp_path):
    fake.responder = lambda body: Reply(json.dumps({"description": "a dog barks"}), delay_s=0.3)
    results = ask(make_client(fake, None, max_concurrency=3), n=9)
    assert all(not isinstance(r, Exception) for r in results)
    assert fake.count == 9
    assert 2 <= fake.max_in_flight <= 3


def test_one_client_serves_several_event_loops(fake, tmp_path):
    client = make_client(fake, tmp_path / "cache.sqlite")
    ask(client)
    ask(client, messages=[{"role": "user", "content": "another"}])
    assert client.stats.requests_sent == 2


def test_strict_schema_is_flat():
    class Inner(BaseModel):
        kind: Annotated[str, Field(pattern="^x$")]

    class Outer(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[Inner]

    class WithConst(BaseModel):
        pick: Literal["only-one"]

    schema = strict_json_schema(Outer)
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text and '"title"' not in text
    assert schema["properties"]["items"]["items"]["properties"]["kind"]["pattern"] == "^x$"
    assert schema["additionalProperties"] is False
    assert strict_json_schema(WithConst)["properties"]["pick"]["enum"] == ["only-one"]


def test_client_from_settings_uses_the_profile():
    llm = load_settings("local-cpu").llm
    client = LLMClient.from_settings(llm, cache_path=None)
    assert [r.url for r in client.replicas] == [llm.resolved_base_url] and client.model == llm.resolved_model
    assert (client.max_concurrency, client.timeout_s, client.max_retries) == (llm.max_concurrency, llm.timeout_s,
                                                                              llm.max_retries)
    assert client.sampling()["max_tokens"] == llm.max_tokens and client.sampling()["seed"] == llm.seed
    assert client.send_seed is (llm.server.kind != "vllm-cpu")
    assert LLMClient.from_settings(load_settings("gpu-cluster").llm, cache_path=None).send_seed


def test_requests_are_spread_over_the_replicas_and_a_dead_one_takes_no_item_with_it(tmp_path):
    """Two servers of the same model: requests go to the one with fewer in flight; when one dies (its port
    closed), every request still gets its answer from the other, and the client counts the failovers."""
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        client = make_client(first, None, base_url=[first.base_url, second.base_url], max_concurrency=8)
        for server in (first, second):
            server.queue += [Reply(json.dumps({"description": "a slow reply"}), delay_s=0.3)] * 4
        replies = ask(client, n=8)
        assert all(not isinstance(r, Exception) for r in replies), replies
        assert first.count == second.count == 4  # fewest in flight: both took their share at once

        second.stop()  # the replica dies: its port refuses connections
        sent_before = first.count
        client = make_client(first, None, base_url=[first.base_url, second.base_url], max_concurrency=2)
        replies = ask(client, n=6)
        assert all(not isinstance(r, Exception) for r in replies), replies
        assert first.count - sent_before == 6 and client.stats.failovers >= 1


def test_a_replica_that_fails_rests_while_the_others_answer(tmp_path):
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        first.queue.append(Fail(500))
        client = make_client(first, None, base_url=[first.base_url, second.base_url], max_concurrency=1)
        replies = ask(client, n=4)
        assert all(not isinstance(r, Exception) for r in replies), replies
        assert client.stats.failovers == 1
        assert first.count == 1 and second.count == 4  # the failed request retried there, then the rest


def test_the_same_request_in_flight_twice_uses_one_reply_the_one_a_rerun_reads(fake, tmp_path):
    """Two clips with identical prompts (the same captions and times in two videos) in batches that run side by
    side: both miss the cache and a server sampling without a seed answers each differently. Both must end with
    the reply the cache keeps, or a rerun from the cache would rebuild one of them differently."""
    cache = tmp_path / "cache.sqlite"
    fake.queue += [Reply('{"description": "first answer"}', delay_s=0.2),
                   Reply('{"description": "second answer"}', delay_s=0.6)]
    a, b = make_client(fake, cache, send_seed=False), make_client(fake, cache, send_seed=False)

    async def both():
        async with a, b:
            return await asyncio.gather(*(c.complete_json(USER, Described, schema_name="described",
                                                          stage=StageName.fuse, subject="local-v1") for c in (a, b)))

    first, second = asyncio.run(both())
    assert fake.count == 2  # both were sent: neither was in the cache yet
    assert first.value.description == second.value.description == "first answer"
    rerun = make_client(fake, cache)
    assert ask(rerun).value.description == "first answer" and rerun.stats.requests_sent == 0


def test_a_text_reply_is_parsed_by_code_retried_when_unusable_and_cached_when_used(tmp_path):
    """``complete_text``: no response format is sent (no grammar for the server to build); the caller's parser
    decides, an unusable reply is retried with a new seed and never cached, and a rerun is served from the cache."""
    replies = iter(["no numbers here", "1. What is heard?\n2. What is seen?"])

    def parse(text: str) -> list[str]:
        lines = [line.split(". ", 1)[1] for line in text.splitlines() if line[:1].isdigit()]
        if len(lines) != 2:
            raise ValueError("want two numbered lines")
        return lines

    with FakeOpenAIServer(lambda body: Reply(next(replies))) as server:
        client = make_client(server, tmp_path / "cache.sqlite")

        async def main():
            async with client:
                return await client.complete_text(USER, parse, reply_name="two_lines", stage=StageName.qa,
                                                  subject="local-v1")

        reply = asyncio.run(main())
        assert reply.value == ["What is heard?", "What is seen?"] and reply.usage.attempts == 2
        assert client.stats.invalid_replies == 1 and server.count == 2
        assert all("response_format" not in body for body in server.requests)
        seeds = [body.get("seed") for body in server.requests]
        assert seeds[0] != seeds[1]
        again = make_client(server, tmp_path / "cache.sqlite")

        async def rerun():
            async with again:
                return await again.complete_text(USER, parse, reply_name="two_lines", stage=StageName.qa,
                                                 subject="local-v1")

        assert asyncio.run(rerun()).value == reply.value and server.count == 2 and again.stats.cache_hits == 1


def test_a_request_that_stayed_invalid_is_replayed_not_resampled(tmp_path):
    """After its retries, a request's last invalid reply is recorded: a rerun raises the same failure without
    sending anything (a resumed run decides as the first did), unless today's rules accept that reply."""
    with FakeOpenAIServer(lambda body: Reply("not two lines")) as server:
        client = make_client(server, tmp_path / "cache.sqlite", max_invalid_retries=1)

        def ask_lines(c, parse):
            async def main():
                async with c:
                    return await c.complete_text(USER, parse, reply_name="lines", stage=StageName.qa,
                                                 subject="local-v1")
            return asyncio.run(main())

        def strict(text: str) -> str:
            if "\n" not in text:
                raise ValueError("want two lines")
            return text

        with pytest.raises(LLMPermanentError):
            ask_lines(client, strict)
        assert server.count == 2
        again = make_client(server, tmp_path / "cache.sqlite")
        with pytest.raises(LLMPermanentError, match="recorded reply of an earlier run"):
            ask_lines(again, strict)
        assert server.count == 2 and again.stats.requests_sent == 0
        # a parser that accepts the recorded reply uses it, and from then on it is an ordinary cached reply
        assert ask_lines(make_client(server, tmp_path / "cache.sqlite"), str.upper).value == "NOT TWO LINES"
        cached = make_client(server, tmp_path / "cache.sqlite")
        assert ask_lines(cached, str.upper).value == "NOT TWO LINES" and cached.stats.cache_hits == 1
        assert server.count == 2
