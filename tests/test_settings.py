import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.settings import CONFIG_DIR, load_settings


def test_both_profiles_load_and_differ():
    cpu = load_settings("local-cpu")
    gpu = load_settings("gpu-cluster")
    assert cpu.profile == "local-cpu" and gpu.profile == "gpu-cluster"
    assert cpu.llm.server.kind == "vllm-cpu" and cpu.llm.server.host == "127.0.0.1"
    assert gpu.llm.server.kind == "vllm-gpu" and gpu.llm.server.tensor_parallel_size >= 1
    assert cpu.asr.device == "cpu" and gpu.asr.device == "cuda"
    assert gpu.asr.resources.num_gpus > 0 and cpu.asr.resources.num_gpus == 0
    assert cpu.llm.resolved_base_url == "http://127.0.0.1:8000/v1"


def test_env_overrides_yaml(monkeypatch):
    monkeypatch.setenv("SAVEN_LLM__MAX_CONCURRENCY", "3")
    monkeypatch.setenv("SAVEN_SEGMENT__MIN_CLIP_S", "1.5")
    cfg = load_settings("local-cpu")
    assert cfg.llm.max_concurrency == 3
    assert cfg.segment.min_clip_s == 1.5


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="known profiles: .*local-cpu"):
        load_settings("no-such-profile")


def test_unknown_keys_are_rejected(tmp_path: Path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIG_DIR / "local-cpu.yaml").read_text() + "\nllm:\n  not_a_setting: 1\n")
    monkeypatch.setenv("SAVEN_CONFIG", str(bad))
    with pytest.raises(ValidationError, match="not_a_setting"):
        load_settings()


def test_qa_options_come_from_the_profile_and_env(monkeypatch):
    from schemas.records import QAType

    assert load_settings("local-cpu").qa.types == list(QAType)
    monkeypatch.setenv("SAVEN_QA__TYPES", '["temporal_grounding"]')
    monkeypatch.setenv("SAVEN_QA__QUESTIONS_PER_REQUEST", "2")
    qa = load_settings("local-cpu").qa
    assert qa.types == [QAType.temporal_grounding] and qa.questions_per_request == 2
    monkeypatch.setenv("SAVEN_QA__TYPES", '["no_such_type"]')
    with pytest.raises(ValidationError):
        load_settings("local-cpu")


def test_the_demo_serves_its_own_llm_model(monkeypatch):
    from flows import demo
    from infra import servers
    from schemas import settings as settings_module

    for key in ("SAVEN_LLM__SERVER__MODEL", "SAVEN_LLM__SERVER__SERVED_NAME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SAVEN_DEMO__LLM_MODEL", "smollm2-135m-instruct-gguf")  # installed by `make models`
    settings_module.settings.cache_clear()
    try:
        cfg = demo.use_demo_llm(settings_module.settings())
        assert cfg.llm.server.model == cfg.llm.resolved_model == "smollm2-135m-instruct-gguf"
        assert "smollm2-135m-instruct-gguf" in " ".join(servers.llm_server_spec(cfg).argv)
        monkeypatch.setenv("SAVEN_DEMO__LLM_MODEL", "not-installed")
        with pytest.raises(Exception, match="not installed"):
            demo.use_demo_llm(load_settings("local-cpu"))
    finally:
        for key in ("SAVEN_LLM__SERVER__MODEL", "SAVEN_LLM__SERVER__SERVED_NAME"):
            os.environ.pop(key, None)  # use_demo_llm set them in os.environ, not through monkeypatch
        settings_module.settings.cache_clear()
