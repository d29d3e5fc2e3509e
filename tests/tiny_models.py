"""Tiny random-init twins of every hub model the gpu-cluster profile pins, built in code, each written as the files
its real repository holds (the names the project's loaders open) so that the cluster's own code paths load them:

- ``Systran/faster-whisper-large-v3``: a transformers Whisper with large-v3's 128 mel bins, shrunk, converted for
  faster-whisper by CTranslate2's own converter (config.json, model.bin, vocabulary.json, tokenizer.json,
  preprocessor_config.json);
- ``MIT/ast-finetuned-audioset-...``: an Audio Spectrogram Transformer with AST's input (128 mels x 1024 frames) and
  an AudioSet label head (the class names of the embedded YAMNet, AudioSet's ontology);
- ``Qwen/Qwen2.5-7B-Instruct``: a Qwen2 with the 7B's vocabulary, grouped-query attention and rope base, two layers,
  and the real Qwen2.5 tokenizer and chat template (from the embedded Qwen2.5-0.5B-Instruct);
- ``Qwen/Qwen2.5-VL-7B-Instruct`` and ``Qwen/Qwen2.5-Omni-7B``, served by vLLM: NOT their architectures. vLLM's CPU
  build cannot serve them here (both import torchvision, whose PyPI build needs CUDA torch), so their twins are the
  closest ones it serves through the same requests: Idefics3 (SmolVLM's: ``image_url``) and Qwen2-Audio
  (``input_audio``), with the real Qwen2.5 tokenizer. They prove the serving, placement and requests of the
  cluster's path, not that vLLM loads Qwen2.5-VL or Qwen2.5-Omni (a GPU machine's check);
- ``google/siglip-so400m-patch14-384`` and ``openai/whisper-large-v3``: the 7b model preset's frozen encoders,
  shrunk (same model types, image size, patch size and mel bins).

TINY_COCA and TINY_CLIP: the ``open-clip`` captioner's shrunk towers (tests/test_visual_caption.py).

What a twin proves: the files are where the loaders look, the architectures load and run through the same calls as
the real weights. What it cannot: anything about quality or speed (its outputs are noise).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Callable

from infra import model_cache

SEED = 0


def _seeded():
    import torch

    torch.manual_seed(SEED)


def _whisper_tokenizer_files() -> tuple[Path, dict[str, int], list[int]]:
    """The multilingual Whisper tokenizer of the embedded whisper-base (large-v3's, less its one added language)."""
    folder = model_cache.model_path("whisper-base")
    added = {t["content"]: t["id"] for t in json.loads((folder / "tokenizer.json").read_text())["added_tokens"]}
    lang_ids = json.loads((folder / "config.json").read_text())["lang_ids"]
    return folder / "tokenizer.json", added, lang_ids


def _tiny_hf_whisper(folder: Path, *, vocab_size: int) -> None:
    """A transformers Whisper (128 mels, like large-v3) with its tokenizer, feature extractor and generation
    config, as ``save_pretrained`` writes them."""
    from transformers import (GenerationConfig, PreTrainedTokenizerFast, WhisperConfig,
                              WhisperFeatureExtractor, WhisperForConditionalGeneration)

    tokenizer_json, added, lang_ids = _whisper_tokenizer_files()
    config = WhisperConfig(vocab_size=vocab_size, num_mel_bins=128, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, max_source_positions=1500, max_target_positions=448,
                           decoder_start_token_id=added["<|startoftranscript|>"], pad_token_id=added["<|endoftext|>"],
                           bos_token_id=added["<|endoftext|>"], eos_token_id=added["<|endoftext|>"])
    _seeded()
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    ids = set(lang_ids)
    GenerationConfig(decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id, alignment_heads=[[1, 0], [1, 1]], is_multilingual=True,
                     lang_to_id={k: v for k, v in added.items() if v in ids},
                     no_timestamps_token_id=added["<|notimestamps|>"]).save_pretrained(folder)
    end = "<|endoftext|>"
    PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), unk_token=end, bos_token=end, eos_token=end,
                            pad_token=end).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(folder)


def faster_whisper_large_v3(folder: Path) -> None:
    import ctranslate2
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _tiny_hf_whisper(Path(tmp), vocab_size=51865)
        # float16 on disk, as Systran's conversion; CTranslate2 converts to the compute type it is loaded with
        ctranslate2.converters.TransformersConverter(
            tmp, copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(str(folder), quantization="float16",
                                                                                   force=True)


def openai_whisper_large_v3(folder: Path) -> None:
    _tiny_hf_whisper(folder, vocab_size=51866)


def audioset_labels() -> list[str]:
    with open(model_cache.model_path("yamnet") / "yamnet_class_map.csv", newline="") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


def ast_audioset(folder: Path) -> None:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    labels = audioset_labels()
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_mel_bins=128, max_length=1024, id2label=dict(enumerate(labels)),
                       label2id={label: i for i, label in enumerate(labels)})
    _seeded()
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=128, max_length=1024, sampling_rate=16000).save_pretrained(folder)


TINY_COCA = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16,
                   "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True},
    "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2,
                 "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2,
                       "attn_pooler_heads": 2},
    "custom_text": True,
}
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


QWEN_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def qwen2_5_7b_instruct(folder: Path) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    # head_dim 128 as the 7B's (vLLM's CPU attention has kernels for a few head sizes only), grouped-query 2:1
    config = Qwen2Config(vocab_size=152064, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768,
                         rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=151643,
                         eos_token_id=151645, torch_dtype=torch.bfloat16)
    _seeded()
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    source = model_cache.model_path("qwen2.5-0.5b-instruct")
    for name in QWEN_TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)


def siglip_so400m(folder: Path) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    config = SiglipConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 2, "vocab_size": 32000, "max_position_embeddings": 64},
                          vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                         "num_attention_heads": 2, "image_size": 384, "patch_size": 14})
    _seeded()
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 384, "width": 384}).save_pretrained(folder)


# -- The served media models' stand-ins. vLLM's CPU build imports torchvision for Qwen2.5-VL, Qwen2.5-Omni's thinker,
# LLaVA and most vision models, and PyPI's torchvision is a CUDA build that cannot load beside vLLM's CPU torch: the
# closest architectures it serves without it are Qwen2-Audio (a Whisper-style encoder into a Qwen2 LLM, the same
# input_audio path) and Idefics3 (SmolVLM's: a SigLIP-style tower into a Llama, the same image_url path).

def _qwen_tokenizer_renamed(folder: Path, renamed: dict[int, str], token_attrs: dict[str, str],
                            chat_template: str) -> None:
    """The real Qwen2.5 tokenizer with reserved added tokens renamed (as the multimodal Qwen repos have them) and
    the named token attributes the processors read (tokenizer.audio_token, ...)."""
    source = model_cache.model_path("qwen2.5-0.5b-instruct")
    tok = json.loads((source / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]  # the embedded tokenizer.json holds the added tokens in the BPE vocab too
    for entry in tok["added_tokens"]:
        if entry["id"] in renamed:
            vocab.pop(entry["content"], None)
            entry["content"] = renamed[entry["id"]]
            vocab[entry["content"]] = entry["id"]
    (folder / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    cfg = json.loads((source / "tokenizer_config.json").read_text())
    for key in ("is_local", "local_files_only"):
        cfg.pop(key, None)
    cfg["extra_special_tokens"] = dict(token_attrs)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "chat_template.jinja").write_text(chat_template)
    shutil.copy(source / "generation_config.json", folder / "generation_config.json")




QWEN2_AUDIO_RENAMED = {151646: "<|AUDIO|>", 151647: "<|audio_bos|>", 151648: "<|audio_eos|>"}
QWEN2_AUDIO_TOKEN_ATTRS = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>",
                           "audio_eos_token": "<|audio_eos|>"}
# Qwen2-Audio-7B-Instruct's template, plus `content['type'] == 'audio'` (vLLM hands the template {"type": "audio"})
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content or 'input_audio' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: "
    "<|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen2_audio_7b_instruct(folder: Path) -> None:
    """Qwen2-Audio (Whisper-style audio encoder + projector + Qwen2 text model), shrunk; 128 mels, 16 kHz."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

    folder.mkdir(parents=True, exist_ok=True)
    config = Qwen2AudioConfig(
        audio_config={"num_mel_bins": 128, "encoder_layers": 2, "encoder_attention_heads": 2,
                      "encoder_ffn_dim": 128, "d_model": 64, "max_source_positions": 1500},
        text_config={"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 256, "intermediate_size": 512,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 8192, "rope_theta": 1e4, "rms_norm_eps": 1e-5,
                     "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645},
        audio_token_index=151646)
    config.architectures = ["Qwen2AudioForConditionalGeneration"]
    _seeded()
    model = Qwen2AudioForConditionalGeneration(config).to(torch.bfloat16)
    # the hub checkpoint's names (transformers 5's save_pretrained writes language_model.model.model.*, which
    # neither it nor vLLM reads back)
    renames = (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
               ("model.audio_tower.", "audio_tower."), ("model.multi_modal_projector.", "multi_modal_projector."))
    state = {}
    for name, tensor in model.state_dict().items():
        for old, new in renames:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        state[name] = tensor.contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    written = config.to_dict()
    written["torch_dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(written, indent=2))
    _qwen_tokenizer_renamed(folder, QWEN2_AUDIO_RENAMED, QWEN2_AUDIO_TOKEN_ATTRS, QWEN2_AUDIO_CHAT_TEMPLATE)
    # preprocessor_config.json as the hub repo's (Whisper features, 128 mels, 30 s chunks)
    pre = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000).to_dict()
    pre.pop("mel_filters", None)
    pre["processor_class"] = "Qwen2AudioProcessor"
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))


IDEFICS3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}<image>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def idefics3_vlm(folder: Path) -> None:
    """An Idefics3 (SmolVLM's architecture: SigLIP-style vision tower, pixel-shuffle connector, Llama text model),
    shrunk, with the real Qwen2.5 tokenizer plus Idefics3's image tokens; its image processor has a PIL backend,
    so neither transformers nor vLLM needs torchvision."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Idefics3Config, Idefics3ForConditionalGeneration
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
    from transformers.models.idefics3.processing_idefics3 import Idefics3Processor

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(model_cache.model_path("qwen2.5-0.5b-instruct") / name, folder / name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<fake_token_around_image>", "<image>",
                                                                "<end_of_utterance>"]})
    tokenizer.add_tokens(["<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
                         special_tokens=True)
    image_size, patch_size, scale_factor = 64, 16, 2
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor ** 2
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(size={"longest_edge": 2 * image_size},
                                                  max_image_size={"longest_edge": image_size}),
        tokenizer=tokenizer, image_seq_len=image_seq_len, chat_template=IDEFICS3_CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    for key in ("is_local", "local_files_only"):
        cfg.pop(key, None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))

    config = Idefics3Config(
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": patch_size},
        text_config={"model_type": "llama", "vocab_size": 152064, "hidden_size": 256, "intermediate_size": 512,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 8192, "rope_theta": 1e5, "rms_norm_eps": 1e-5,
                     "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
                     "pad_token_id": 151643},
        scale_factor=scale_factor, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=151643, tie_word_embeddings=False)
    config.architectures = ["Idefics3ForConditionalGeneration"]
    _seeded()
    model = Idefics3ForConditionalGeneration(config).to(torch.bfloat16)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    written = config.to_dict()
    written["torch_dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(written, indent=2))


# repository -> builder: every repository the gpu-cluster profile pins has a twin (tests/test_cluster_models.py)
TWINS: dict[str, Callable[[Path], None]] = {
    "Systran/faster-whisper-large-v3": faster_whisper_large_v3,
    "MIT/ast-finetuned-audioset-10-10-0.4593": ast_audioset,
    "Qwen/Qwen2.5-7B-Instruct": qwen2_5_7b_instruct,
    # served by vLLM's CPU build in the rehearsal: the closest architectures it serves (see above)
    "Qwen/Qwen2.5-VL-7B-Instruct": idefics3_vlm,
    "Qwen/Qwen2.5-Omni-7B": qwen2_audio_7b_instruct,
    "google/siglip-so400m-patch14-384": siglip_so400m,
    "openai/whisper-large-v3": openai_whisper_large_v3,
}


def build_twins(root: Path, repos: list[str] | None = None) -> dict[str, Path]:
    """Each repository's twin in ``root/<org>--<name>``: the folders a ``tests.fake_hub.FakeHub`` serves."""
    out = {}
    for repo in repos or list(TWINS):
        folder = root / repo.replace("/", "--")
        built = root / f"{folder.name}.built"  # beside the folder: the hub serves every file inside it
        if not built.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            TWINS[repo](folder)
            built.touch()
        out[repo] = folder
    return out
