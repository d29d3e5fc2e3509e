"""The real local servers: vLLM answers JSON-schema requests; Prefect is healthy; stop ends exactly our pid."""

import json
import os
import subprocess
import sys

from typing import Annotated

import httpx
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from infra import servers
from schemas.settings import load_settings


class SceneFacts(BaseModel):
    colour_of_ball: str = Field(max_length=30)
    number_of_cats: int = Field(ge=0, le=10)
    # Bounded lengths keep a 135M model from rambling inside a string until max_tokens cuts the JSON.
    heard: list[Annotated[str, Field(max_length=20)]] = Field(min_length=1, max_length=3)


@pytest.mark.llm
def test_vllm_json_schema_reply_validates(llm_server):
    client = OpenAI(base_url=llm_server.base_url, api_key="EMPTY")
    reply = client.chat.completions.create(
        model=llm_server.model,
        messages=[{"role": "user", "content": "A red ball rolls past two cats while a dog barks. "
                                              "Describe it as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "SceneFacts", "schema": SceneFacts.model_json_schema(),
                                         "strict": True}},
        max_tokens=200, temperature=0.0)
    facts = SceneFacts.model_validate_json(reply.choices[0].message.content)
    assert facts.number_of_cats >= 0
    assert reply.usage.completion_tokens > 0
    models = httpx.get(llm_server.base_url + "/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [llm_server.model]


@pytest.mark.prefect
def test_prefect_server_is_ours_and_healthy(prefect_server):
    assert prefect_server.startswith("http://127.0.0.1:")
    assert httpx.get(prefect_server + "/health", timeout=5).json() is True


def test_stop_ends_exactly_the_recorded_process_group(tmp_path):
    spec = servers.ServerSpec("sleeper", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"], {},
                              "http://127.0.0.1:9/unused", 5.0)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = subprocess.Popen(spec.argv, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        spec.pid_file(tmp_path).write_text(f'{{"pid": {proc.pid}}}')
        assert servers.stop(spec, tmp_path) is True
        assert proc.wait(timeout=10) is not None
        assert bystander.poll() is None  # untouched
        assert not spec.pid_file(tmp_path).exists()
        assert servers.stop(spec, tmp_path) is False  # nothing left to stop
    finally:
        bystander.kill()


def test_embedded_llm_server_refuses_public_bind(monkeypatch):
    monkeypatch.setenv("SAVEN_LLM__SERVER__HOST", "0.0.0.0")
    with pytest.raises(servers.ServerError, match="127.0.0.1"):
        servers.llm_server_spec(load_settings("local-cpu"))
    # a cluster profile's clients reach it on a node address: allowed there, and only behind a key, which travels
    # in the server's environment, never on its command line (ps, the pid file)
    monkeypatch.setenv("SAVEN_LLM__REPLICAS_FROM_RAY", "true")
    with pytest.raises(servers.ServerError, match="api_key"):
        servers.llm_server_spec(load_settings("local-cpu"))
    monkeypatch.setenv("SAVEN_LLM__API_KEY", "planted-key")
    spec = servers.llm_server_spec(load_settings("local-cpu"))
    assert spec.env["VLLM_API_KEY"] == "planted-key" and not any("planted-key" in a for a in spec.argv)


def test_server_commands_are_argument_lists_bound_to_loopback():
    cfg = load_settings("local-cpu")
    llm = servers.llm_server_spec(cfg)
    assert llm.argv[llm.argv.index("--host") + 1] == "127.0.0.1"
    assert llm.env["HF_HUB_OFFLINE"] == "1"
    pf = servers.prefect_server_spec(cfg)
    assert pf.argv[pf.argv.index("--host") + 1] == "127.0.0.1"
    assert pf.env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert pf.env["PREFECT_HOME"].startswith(os.fspath(cfg.paths.run_dir))


def test_side_llm_server_has_its_own_port_files_and_model(monkeypatch):
    cfg = load_settings("local-cpu")
    model = cfg.llm.server.model  # installed by `make setup`: the spec resolves its folder
    spec, base_url = servers.side_llm_server(cfg, model, name="llm-server-side")
    port = cfg.llm.server.port + 1
    assert spec.name == "llm-server-side" and spec.health_url == f"http://127.0.0.1:{port}/health"
    assert base_url == f"http://127.0.0.1:{port}/v1"
    assert spec.argv[spec.argv.index("--port") + 1] == str(port)
    assert spec.argv[spec.argv.index("--served-model-name") + 1] == model
    assert spec.pid_file(cfg.paths.run_dir) != servers.llm_server_spec(cfg).pid_file(cfg.paths.run_dir)
    # No grounded-QA side server when the profile already serves that model, or when it is not installed.
    same = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"server": cfg.llm.server.model_copy(
        update={"model": servers.GROUNDED_QA_MODEL})})})
    assert servers.grounded_qa_server(same) is None

    def missing(name, deep=True):
        raise servers.model_cache.ModelCacheError(f"{name} is not installed")

    monkeypatch.setattr(servers.model_cache, "verify", missing)
    assert servers.grounded_qa_server(cfg) is None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_running_server_started_for_other_settings_is_not_reused(tmp_path, monkeypatch):
    port = _free_port()
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", str(tmp_path)]
    spec = servers.ServerSpec("llm-server", argv, {}, f"http://127.0.0.1:{port}/", 20.0)
    first = servers.start(spec, tmp_path)
    try:
        assert servers.start(spec, tmp_path).pid == first.pid  # the same request: reused
        other_model = servers.ServerSpec("llm-server", [*argv[:-1], str(tmp_path / "x")], {}, spec.health_url, 20.0)
        with pytest.raises(servers.ServerError, match="make llm-server-stop"):
            servers.start(other_model, tmp_path)
        # A deployment's flow runs inherit SAVEN_* settings: other settings, another deployment server.
        inheriting = servers.ServerSpec("deployment-server", argv, {}, spec.health_url, 20.0, exclusive=False,
                                        inherits_settings=True)
        # The same process, recorded as a deployment server started under the current settings.
        spec.pid_file(tmp_path).unlink()
        inheriting.pid_file(tmp_path).write_text(json.dumps({"pid": first.pid, **servers._identity(inheriting)}))
        assert servers.start(inheriting, tmp_path).pid == first.pid
        monkeypatch.setenv("SAVEN_LLM__SERVER__MODEL", "another-model")
        with pytest.raises(servers.ServerError, match="make serve-stop"):
            servers.start(inheriting, tmp_path)
    finally:
        assert servers.stop(servers.ServerSpec("deployment-server", [], {}, "", 0.0), tmp_path)
