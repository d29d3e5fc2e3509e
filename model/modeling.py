"""SAVEn-Vid: TLP + AVTS resampler + LoRA LLM over cached frozen-encoder features.

One forward pass: window spans and the query's range -> TLP time tokens; cached video/audio tokens + time tokens ->
AVTS -> one interleaved sequence per sample; that sequence replaces the placeholder tokens in the LLM's input
embeddings (their number must match exactly); the LLM computes the loss on the answer tokens only.

Trainable parts by stage (``set_trainable``): stage 1 (alignment) TLP + AVTS; stage 2 (instruction tuning)
TLP + AVTS + LoRA. Nothing else ever trains: the base LLM is frozen by name, not by hoping peft did it.

Checkpoint folder (``save_pretrained``/``from_pretrained`` are exact inverses): ``config.json``,
``trainable.safetensors`` (every TLP, AVTS and LoRA tensor), ``tokenizer/``, ``meta.json`` (fingerprints of the
frozen parts it was trained on). No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model.avts import AVTSResampler
from model.config import ModelConfig
from model.llm import build_llm, build_tokenizer
from model.tlp import TemporalLinearProjection

TRAINABLE_FILE = "trainable.safetensors"
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"


class PlaceholderMismatchError(ValueError):
    """The prompt holds a different number of placeholder tokens than the multimodal sequence has tokens."""


class SavenVid(nn.Module):
    def __init__(self, config: ModelConfig, llm: nn.Module, tokenizer, base_fingerprint: str = ""):
        super().__init__()
        self.config, self.tokenizer, self.base_fingerprint = config, tokenizer, base_fingerprint
        self.encoder_fingerprints: dict[str, str] = {}
        embeddings = llm.get_input_embeddings().weight
        d = embeddings.shape[1]
        self.tlp = TemporalLinearProjection(d, config.resampler.time_norm_s)
        with torch.no_grad():  # the interleaved tokens come out as long as the LLM's own token embeddings
            text_norm = float(torch.linalg.vector_norm(embeddings, dim=-1, dtype=torch.float32).mean())
        self.avts = AVTSResampler(config.resampler, config.vision.feature_dim, config.audio.feature_dim, d,
                                  out_norm=text_norm)
        self.llm = llm
        self.placeholder_id = tokenizer.convert_tokens_to_ids(config.llm.placeholder_token)

    @classmethod
    def build(cls, config: ModelConfig, dtype: torch.dtype = torch.float32, tokenizer=None) -> "SavenVid":
        tokenizer = tokenizer or build_tokenizer(config.llm)
        llm, base_fp = build_llm(config.llm, tokenizer, dtype)
        return cls(config, llm, tokenizer, base_fp)

    # --- forward ---------------------------------------------------------------------------------------------

    def multimodal_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T*(Qv+Qa+1), D] interleaved tokens and the number of real ones per sample (padded windows last)."""
        duration = batch["duration"]
        window_time = self.tlp(batch["window_spans"], duration[:, None])
        query_time = self.tlp(batch["query_span"], duration)
        tokens = self.avts(batch["video"], batch["video_mask"], batch["audio"], batch["audio_mask"],
                           window_time, query_time)
        return tokens, batch["window_mask"].sum(1) * self.config.resampler.tokens_per_window

    def embed(self, input_ids: torch.Tensor, mm: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        emb = self.llm.get_input_embeddings()(input_ids)
        slots = input_ids == self.placeholder_id
        found = slots.sum(1)
        if not torch.equal(found, counts.to(found.device)):
            bad = (found != counts).nonzero().flatten().tolist()
            raise PlaceholderMismatchError(
                f"samples {bad}: {found[bad].tolist()} placeholder tokens {self.config.llm.placeholder_token!r} "
                f"in the prompt but {counts[bad].tolist()} multimodal tokens; build prompts with "
                f"model.data.encode_prompt so the counts agree")
        real = torch.arange(mm.shape[1], device=mm.device)[None] < counts[:, None]
        return emb.masked_scatter(slots[..., None], mm[real].to(emb.dtype))

    def forward(self, batch: dict[str, torch.Tensor]):
        mm, counts = self.multimodal_tokens(batch)
        emb = self.embed(batch["input_ids"], mm, counts)
        return self.llm(inputs_embeds=emb, attention_mask=batch["attention_mask"], labels=batch.get("labels"))

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int = 64, **kwargs) -> torch.Tensor:
        """New token ids for left-padded prompts (greedy unless kwargs say otherwise)."""
        mm, counts = self.multimodal_tokens(batch)
        emb = self.embed(batch["input_ids"], mm, counts)
        kwargs.setdefault("do_sample", False)
        return self.llm.generate(inputs_embeds=emb, attention_mask=batch["attention_mask"],
                                 max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                 eos_token_id=self.tokenizer.eos_token_id,
                                 suppress_tokens=[self.placeholder_id], **kwargs)

    # --- what trains ----------------------------------------------------------------------------------------

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every tensor a stage may train (TLP, AVTS, LoRA), whatever the current stage: the checkpoint's content."""
        return {n: p for n, p in self.named_parameters() if is_tunable_name(n)}

    def save_pretrained(self, folder: Path, fingerprints: dict[str, str] | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder)
        save_file({n: p.detach().cpu().contiguous() for n, p in self.trainable_state().items()},
                  str(folder / TRAINABLE_FILE))
        self.tokenizer.save_pretrained(folder / TOKENIZER_DIR)
        meta = {"base_llm": self.base_fingerprint, "encoders": fingerprints or {}}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return folder

    def load_trainable(self, folder: Path) -> None:
        state = load_file(str(Path(folder) / TRAINABLE_FILE))
        own = self.trainable_state()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            why = (" (a checkpoint from before the resampler normalised its output, 2026-12-07: train it again)"
                   if any(n.startswith("avts.norm_out.") for n in missing) else "")
            raise ValueError(f"{folder}: trainable tensors differ; missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}{why}")
        with torch.no_grad():
            for name, param in own.items():
                param.copy_(state[name].to(param.dtype))

    @classmethod
    def from_pretrained(cls, folder: Path, dtype: torch.dtype = torch.float32) -> "SavenVid":
        from transformers import AutoTokenizer

        folder = Path(folder)
        config = ModelConfig.load(folder)
        model = cls.build(config, dtype, tokenizer=AutoTokenizer.from_pretrained(folder / TOKENIZER_DIR))
        meta = json.loads((folder / META_FILE).read_text())
        if meta["base_llm"] != model.base_fingerprint and "unhashed" not in meta["base_llm"]:
            raise ValueError(f"{folder}: trained on base LLM {meta['base_llm']}, rebuilt {model.base_fingerprint}")
        model.load_trainable(folder)
        model.encoder_fingerprints = meta.get("encoders", {})
        return model


def is_tunable_name(name: str) -> bool:
    return name.startswith(("tlp.", "avts.")) or "lora_" in name


def set_trainable(model: SavenVid, stage: int) -> list[str]:
    """Freeze everything, then unfreeze exactly what ``stage`` trains; returns the trainable names."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, not {stage!r}")
    model.requires_grad_(False)
    model.tlp.requires_grad_(True)
    model.avts.requires_grad_(True)
    if stage == 2:
        for name, param in model.llm.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]
