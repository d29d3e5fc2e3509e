"""Training examples from the dataset's shards and cached features; prompt encoding; the padding collator.

Stage 1 (alignment): one example per fused clip description. The model sees that clip's windows and learns to say
"From <start> to <end>, we can see <visual>, and hear <audio>." Stage 2 (instruction tuning): one example per QA
item over the whole video: the question and its four options in, "<letter>. <option>" out.

Prompts go through the tokenizer's chat template with a single placeholder token, which is then expanded at the id
level to exactly as many placeholders as the AVTS output has tokens; labels are -100 on the prompt (placeholders
included), so only the answer is learned.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from model.config import ModelConfig
from model.features import VideoFeatures, features_path, load_features, pack_windows
from model.tlp import parse_time_range
from schemas.records import LETTERS, ClipDescription, QAItem, VideoRecord, hms

IGNORE = -100
STAGE1_PROMPT = "Describe what you can see and hear in this video."
MCQ_INSTRUCTION = "Answer with the letter of the correct option."


@dataclass(frozen=True)
class Example:
    example_id: str
    video_id: str
    span: tuple[float, float]  # the part of the video the model is shown
    prompt: str  # the user's text (no placeholder)
    query: str  # the text the query time range is parsed from
    target: str


def _lower_first(text: str) -> str:
    word = text.split(" ", 1)[0]
    return text if len(word) > 1 and word.isupper() else text[:1].lower() + text[1:]  # keep "TV", "BBC"


def caption_target(d: ClipDescription) -> str:
    visual = _lower_first(d.visual.strip().rstrip("."))
    heard = [x.strip().rstrip(".") for x in (d.narration, d.environment, d.timbre, d.event, d.emotion) if x.strip()]
    hear = _lower_first("; ".join(heard)) if heard else "no notable sound"
    return f"From {hms(d.start_s)} to {hms(d.end_s)}, we can see {visual}, and hear {hear}."


def mcq_prompt(question: str, options: list[str]) -> str:
    lines = [question.strip(), *(f"{LETTERS[i]}. {o.strip()}" for i, o in enumerate(options)), MCQ_INSTRUCTION]
    return "\n".join(lines)


def stage1_examples(descriptions: list[ClipDescription]) -> list[Example]:
    return [Example(d.clip_id, d.video_id, (d.start_s, d.end_s), STAGE1_PROMPT, STAGE1_PROMPT, caption_target(d))
            for d in descriptions]


def stage2_examples(items: list[QAItem], durations: dict[str, float]) -> list[Example]:
    return [Example(q.qa_id, q.video_id, (0.0, durations[q.video_id]), mcq_prompt(q.question, q.options),
                    q.question, f"{LETTERS[q.answer_index]}. {q.options[q.answer_index]}")
            for q in items if q.video_id in durations]


def load_examples(dataset_dir: Path, stage: int, *, include_heldout: bool = False,
                  heldout_only: bool = False) -> list[Example]:
    """Training examples; AVBench's held-out videos (schemas.split, fraction and salt from settings) are left out.
    ``heldout_only``: the examples of those videos instead (evaluation during training; may be empty)."""
    from schemas.settings import settings
    from schemas.shards import read_records
    from schemas.split import HeldOut

    bench = settings().benchmark
    qa_items = read_records(dataset_dir, "qa", QAItem)
    held = HeldOut.of((q.video_id for q in qa_items), bench.heldout_fraction, bench.split_salt,
                      bench.min_heldout_items)

    def keep(video_id: str) -> bool:
        if heldout_only:
            return held(video_id)
        return include_heldout or not held(video_id)

    if stage == 1:
        descriptions = [d for d in read_records(dataset_dir, "descriptions", ClipDescription) if keep(d.video_id)]
        examples = stage1_examples(descriptions)
    elif stage == 2:
        durations = {v.video_id: v.duration_s for v in read_records(dataset_dir, "videos", VideoRecord)}
        items = [q for q in qa_items if keep(q.video_id)]
        examples = stage2_examples(items, durations)
    else:
        raise ValueError(f"stage must be 1 or 2, not {stage!r}")
    if not examples and not heldout_only:
        table = "descriptions" if stage == 1 else "qa"
        raise ValueError(f"{dataset_dir}: no {table} records outside the AVBench held-out videos, nothing to train "
                         f"stage {stage} on")
    return examples


# --- tokens ------------------------------------------------------------------------------------------------

def encode_prompt(tokenizer, placeholder: str, prompt: str, n_mm: int) -> list[int]:
    """Chat-formatted prompt ids with exactly ``n_mm`` placeholder ids where the video goes."""
    ph_id = tokenizer.convert_tokens_to_ids(placeholder)
    content = f"{placeholder}\n{prompt.replace(placeholder, '')}"  # the user's text can never add a placeholder
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids.count(ph_id) != 1:
        raise ValueError(f"the chat template kept {ids.count(ph_id)} placeholders instead of 1")
    at = ids.index(ph_id)
    return ids[:at] + [ph_id] * n_mm + ids[at + 1:]


def encode_example(tokenizer, config: ModelConfig, prompt: str, n_mm: int, target: str) -> tuple[list[int], list[int]]:
    ids = encode_prompt(tokenizer, config.llm.placeholder_token, prompt, n_mm)
    answer = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    room = config.llm.max_length - len(ids)
    if room < 2:
        raise ValueError(f"prompt of {len(ids)} tokens ({n_mm} multimodal) leaves no room for an answer within "
                         f"max_length {config.llm.max_length}; lower resampler.max_windows or raise max_length")
    answer = answer[:room]
    return ids + answer, [IGNORE] * len(ids) + answer


def make_sample(feats: VideoFeatures, span: tuple[float, float], prompt: str, query: str, tokenizer,
                config: ModelConfig, target: str | None = None) -> dict[str, torch.Tensor]:
    """One model input: packed windows, query span, and prompt (+ answer and labels when ``target`` is given)."""
    sample = pack_windows(feats, span, config.resampler)
    n_mm = len(sample["window_spans"]) * config.resampler.tokens_per_window
    if target is None:
        ids, labels = encode_prompt(tokenizer, config.llm.placeholder_token, prompt, n_mm), None
    else:
        ids, labels = encode_example(tokenizer, config, prompt, n_mm, target)
    sample["query_span"] = torch.tensor(parse_time_range(query) or span, dtype=torch.float32)
    sample["input_ids"] = torch.tensor(ids)
    if labels is not None:
        sample["labels"] = torch.tensor(labels)
    return sample


class FeatureStore:
    """Cached features by video id, a few held in memory; refuses features from other encoders."""

    def __init__(self, dataset_dir: Path, preset: str, fingerprints: dict[str, str] | None = None,
                 max_cached: int = 64):
        self.dataset_dir, self.preset, self.fingerprints = Path(dataset_dir), preset, fingerprints
        self.max_cached, self._lru = max_cached, OrderedDict()

    def get(self, video_id: str) -> VideoFeatures:
        if video_id in self._lru:
            self._lru.move_to_end(video_id)
            return self._lru[video_id]
        feats = load_features(features_path(self.dataset_dir, self.preset, video_id))
        if self.fingerprints and feats.fingerprints != self.fingerprints:
            raise ValueError(f"{video_id}: features from encoders {feats.fingerprints}, expected {self.fingerprints}")
        self._lru[video_id] = feats
        if len(self._lru) > self.max_cached:
            self._lru.popitem(last=False)
        return feats


class SavenVidDataset(Dataset):
    def __init__(self, examples: list[Example], store: FeatureStore, tokenizer, config: ModelConfig):
        self.examples, self.store, self.tokenizer, self.config = examples, store, tokenizer, config

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ex = self.examples[i]
        return make_sample(self.store.get(ex.video_id), ex.span, ex.prompt, ex.query, self.tokenizer, self.config,
                           ex.target)


def _pad(seqs: list[torch.Tensor], value, left: bool) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n, *seqs[0].shape[1:]), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        if left:
            out[i, n - len(s):] = s
        else:
            out[i, : len(s)] = s
    return out


def collate(samples: list[dict[str, torch.Tensor]], pad_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """Pad token sequences (right for training, left for generation) and windows (always at the end)."""
    ids = [s["input_ids"] for s in samples]
    batch = {"input_ids": _pad(ids, pad_id, left),
             "attention_mask": _pad([torch.ones_like(x) for x in ids], 0, left)}
    if all("labels" in s for s in samples):
        batch["labels"] = _pad([s["labels"] for s in samples], IGNORE, left)
    for key in ("video", "video_mask", "audio", "audio_mask", "window_spans"):
        batch[key] = _pad([s[key] for s in samples], 0, left=False)
    batch["window_mask"] = _pad([torch.ones(len(s["window_spans"]), dtype=torch.bool) for s in samples], False,
                                left=False)
    batch["query_span"] = torch.stack([s["query_span"] for s in samples])
    batch["duration"] = torch.stack([s["duration"] for s in samples])
    return batch
