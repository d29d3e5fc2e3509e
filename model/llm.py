"""The language model: an HF causal LM, frozen, with LoRA adapters (peft) and one added placeholder token.

The placeholder marks where the multimodal sequence goes; its embedding row is never used (the model splices the
AVTS output over it), so the row added by the resize is set deterministically (the mean of the existing rows)
rather than sampled, and a reloaded checkpoint computes exactly the same logits. With no ``name_or_path`` the LLM
is a seeded random-init model from ``arch`` with a byte-level tokenizer built in code (the tiny preset).
"""

from __future__ import annotations

import torch
from torch import nn

from infra.model_cache import resolve as resolve_model
from model.config import LLMConfig
from model.encoders import fingerprint, seeded

LLM_INIT_SEED = 2024
# A chat template for tokenizers that have none, so every preset goes through apply_chat_template.
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def byte_tokenizer():
    """A byte-level tokenizer over the 256 bytes plus <pad>, <s>, </s>: any text, no files, no training."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_tokenizer(cfg: LLMConfig):
    if cfg.name_or_path:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.name_or_path))
    else:
        tok = byte_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [cfg.placeholder_token]})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = PLAIN_CHAT_TEMPLATE
    return tok


def _set_new_rows(llm: nn.Module, old_vocab: int) -> None:
    for emb in {id(e): e for e in (llm.get_input_embeddings(), llm.get_output_embeddings()) if e is not None}.values():
        with torch.no_grad():
            emb.weight[old_vocab:] = emb.weight[:old_vocab].float().mean(0).to(emb.weight.dtype)


def build_llm(cfg: LLMConfig, tokenizer, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, str]:
    """The frozen base LLM with LoRA adapters; returns (peft model, base fingerprint)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.name_or_path:
        llm = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.name_or_path), dtype=dtype)
        base_fp = f"pretrained:{cfg.name_or_path}"
    else:
        arch = dict(cfg.arch)
        vocab = max(arch.pop("vocab_size", 0), len(tokenizer))  # an arch may name a bigger (real-size) vocab
        hf_cfg = AutoConfig.for_model(arch.pop("model_type"), vocab_size=vocab,
                                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, **arch)
        with seeded(LLM_INIT_SEED):
            llm = AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype)
        # Hashing is only affordable (and only needed: tests, the tiny preset) for small random models.
        small = sum(p.numel() for p in llm.parameters()) < 50_000_000
        base_fp = f"random:{fingerprint(llm)}" if small else "random:unhashed"
    old_vocab = llm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_vocab:
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        _set_new_rows(llm, old_vocab)
    llm.config.pad_token_id = tokenizer.pad_token_id
    llm.requires_grad_(False)
    lora = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules))
    model = get_peft_model(llm, lora)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, base_fp
