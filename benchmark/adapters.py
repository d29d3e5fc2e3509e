"""Models behind one interface, found by name in a registry (lmms-eval style).

An adapter turns AVBench items into raw answer strings: ``answer(items) -> list[str]``, one per item, in order.
The scorer, not the adapter, extracts letters, rotates options and caches answers; so an adapter also says what
it asks (``prompt``) and who it is (``fingerprint``), which key that cache. An item the adapter could not answer
(server down, features missing) gets ``""`` and a message in ``errors`` under its index; such answers are
counted as wrong but never cached, so a re-score asks again.

Registered: ``random`` (seeded baseline, many answer sheets), ``openai`` (any OpenAI-compatible endpoint given the clip descriptions
and transcripts; ``modality`` none/audio/visual/av), ``blind-llm`` (``openai`` with no context), ``blind-hf`` (a
second blind model from the model cache, in process), ``saven-vid`` (a SAVEn-Vid checkpoint over cached features).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import random
from abc import ABC, abstractmethod
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, StringConstraints

from benchmark.mcq import LETTERS, mcq_text
from infra.registry import Registry
from schemas.records import AVBenchItem, Clip, ClipDescription, SpeechSegment, StageName, VideoRecord, hms

ADAPTERS: Registry[type["ModelAdapter"]] = Registry("model")  # the adapters are all in this module


def register(name: str) -> Callable[[type["ModelAdapter"]], type["ModelAdapter"]]:
    def add(cls: type[ModelAdapter]) -> type[ModelAdapter]:
        ADAPTERS.register(name)(cls)
        cls.registry_name = name
        return cls
    return add


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class BenchContext:
    """What adapters may read about a video besides the item: records from the dataset, loaded once on demand."""

    def __init__(self, dataset_dir: Path | None = None, *, videos: Sequence[VideoRecord] | None = None,
                 clips: Sequence[Clip] | None = None, descriptions: Sequence[ClipDescription] | None = None,
                 speech: Sequence[SpeechSegment] | None = None, cache_dir: Path | None = None):
        self.dataset_dir = Path(dataset_dir) if dataset_dir is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._given = {"videos": videos, "clips": clips, "descriptions": descriptions, "speech": speech}
        self._by_video: dict[str, dict[str, list[Any]]] = {}

    def _table(self, table: str) -> dict[str, list[Any]]:
        if table not in self._by_video:
            records = self._given[table]
            if records is None:
                if self.dataset_dir is None:
                    records = []
                else:
                    from schemas.shards import read_records

                    records = read_records(self.dataset_dir, table)
            grouped: dict[str, list[Any]] = defaultdict(list)
            for r in records:
                grouped[r.video_id].append(r)
            for rows in grouped.values():
                rows.sort(key=lambda r: (getattr(r, "start_s", 0.0), getattr(r, "index", 0)))
            self._by_video[table] = dict(grouped)
        return self._by_video[table]

    def video_ids(self) -> list[str]:
        return sorted(self._table("videos"))

    def video(self, video_id: str) -> VideoRecord | None:
        rows = self._table("videos").get(video_id)
        return rows[0] if rows else None

    def clips(self, video_id: str) -> list[Clip]:
        return self._table("clips").get(video_id, [])

    def descriptions(self, video_id: str) -> list[ClipDescription]:
        return self._table("descriptions").get(video_id, [])

    def speech(self, video_id: str) -> list[SpeechSegment]:
        return self._table("speech").get(video_id, [])


class ModelAdapter(ABC):
    """One model. Subclasses set ``registry_name`` (via ``@register``) and implement ``answer``.

    Answer sheets: the scorer collects ``sheets_for(n_items)`` independent sheets, sheet k from ``on_sheet(k)``. A
    model fills one; a random baseline fills many, because one random sheet over a small benchmark says little
    about chance (2 items give 0, 50 or 100%), while the mean over many estimates it on these very items.
    """

    registry_name = "?"
    sheet = 0
    audio_condition = "original"  # benchmark.counterfactual: "silence" or "swapped" in a counterfactual run
    audio_donors: dict[str, str] = {}  # video id -> the video whose audio it gets when "swapped"

    def __init__(self, context: BenchContext | None = None):
        self.context = context or BenchContext()
        self.errors: dict[int, str] = {}  # index in the last ``answer`` call -> why that item has no answer

    @property
    def model_name(self) -> str:
        """The name in reports."""
        return self.registry_name

    @abstractmethod
    def fingerprint(self) -> str:
        """Everything that changes answers besides the prompt (model, weights, decoding): part of the cache key."""

    def prompt(self, item: AVBenchItem) -> str:
        """The exact text the model gets for ``item``; its hash is part of the cache key."""
        return mcq_text(item.question, item.options)

    @abstractmethod
    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        """Raw answers, one per item, in order."""

    def sheets_for(self, n_items: int) -> int:
        return 1

    def on_sheet(self, sheet: int) -> "ModelAdapter":
        """The adapter that fills answer sheet ``sheet`` (its own fingerprint, so each sheet is cached apart)."""
        if sheet != 0:
            raise ValueError(f"{self.model_name} answers one sheet, not sheet {sheet}")
        return self

    def run_name(self, n_items: int) -> str:
        """The name in reports of a run over ``n_items`` items."""
        sheets = self.sheets_for(n_items)
        return self.model_name if sheets == 1 else f"{self.model_name} mean of {sheets} sheets"

    @property
    def takes_audio(self) -> bool:
        """Whether the model hears the video (then AVBench also scores it with the audio removed and swapped)."""
        return False

    @property
    def baseline_condition(self) -> str:
        """The condition a counterfactual is compared with: the model hearing its own audio in the same form as the
        counterfactuals ("original" when its ordinary input already is that form)."""
        return "original"

    def with_audio(self, condition: str, donors: dict[str, str] | None = None) -> "ModelAdapter":
        """This model under an audio condition (``benchmark.counterfactual``): a copy that shares the loaded model
        and answers with its own fingerprint, so each condition (and each donor assignment) is cached apart."""
        if not self.takes_audio:
            raise ValueError(f"{self.model_name} takes no audio")
        if condition not in ("original", "own", "silence", "swapped"):
            raise ValueError(f"audio condition must be original, own, silence or swapped, not {condition!r}")
        if condition == "original":
            return self
        twin = copy.copy(self)
        twin.audio_condition, twin.audio_donors, twin.errors = condition, dict(donors or {}), {}
        if twin.fingerprint() == self.fingerprint():  # a subclass that forgot ``_audio_suffix``: a cache mix-up
            raise RuntimeError(f"{type(self).__name__}.fingerprint() ignores the audio condition")
        return twin

    def _audio_suffix(self) -> str:
        if self.audio_condition == "original":
            return ""
        if self.audio_condition != "swapped":
            return f":audio={self.audio_condition}"
        # which donor a video gets depends on the items scored: the assignment is part of the cache key
        return f":audio=swapped:donors={sha256_text(json.dumps(sorted(self.audio_donors.items())))[:12]}"

    def donor_of(self, video_id: str) -> str:
        donor = self.audio_donors.get(video_id)
        if donor is None:
            raise LookupError(f"no donor video to swap the audio of {video_id} with")
        return donor


def parse_model_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name"`` or ``"name:key=value,key=value"`` (lmms-eval's ``--model`` + ``--model_args`` in one string)."""
    name, _, args = spec.partition(":")
    kwargs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"model spec {spec!r}: argument {part!r} is not key=value")
        kwargs[key.strip()] = value.strip()
    return name.strip(), kwargs


def make_adapter(spec: str, context: BenchContext | None = None, **overrides: Any) -> ModelAdapter:
    name, kwargs = parse_model_spec(spec)
    return ADAPTERS.get(name)(context=context, **{**kwargs, **overrides})


# --- random baseline -------------------------------------------------------------------------------------------

# Answers a random baseline gives in all (items x sheets) when its sheets are "auto": chance estimated to about
# +-1.4 points (one standard error) however small the benchmark.
RANDOM_ANSWERS = 1000


@register("random")
class RandomAdapter(ModelAdapter):
    """A letter drawn per (seed, sheet, item, option order): the same item asked again gets the same answer.

    ``sheets``: a number, or "auto" (default) for enough sheets that items x sheets >= ``RANDOM_ANSWERS``; the
    reported accuracy is their mean: chance on this benchmark's items, measured through the same extraction and
    grading as every model.
    """

    def __init__(self, context: BenchContext | None = None, seed: int | str = 0, sheets: int | str = "auto",
                 sheet: int | str = 0):
        super().__init__(context)
        self.seed, self.sheet = int(seed), int(sheet)
        self.sheets = None if sheets == "auto" else int(sheets)
        if (self.sheets is not None and self.sheets < 1) or self.sheet < 0:
            raise ValueError(f"random: sheets must be >= 1 or 'auto' and sheet >= 0, got {sheets=} {sheet=}")
        self.calls = 0  # items answered (not from the scorer's cache)

    @property
    def model_name(self) -> str:
        return f"random(seed={self.seed})"

    def fingerprint(self) -> str:
        # Sheet 0 keeps the one-sheet key, so caches written before sheets existed still answer it.
        return f"random:seed={self.seed}" + (f":sheet={self.sheet}" if self.sheet else "")

    def sheets_for(self, n_items: int) -> int:
        return self.sheets or max(1, math.ceil(RANDOM_ANSWERS / max(n_items, 1)))

    def on_sheet(self, sheet: int) -> "RandomAdapter":
        return self if sheet == self.sheet else RandomAdapter(self.context, seed=self.seed,
                                                              sheets=self.sheets or "auto", sheet=sheet)

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        self.calls += len(items)
        out = []
        sheet = f"{self.sheet}\x00" if self.sheet else ""
        for item in items:
            key = sha256_text(f"{self.seed}\x00{sheet}{item.item_id}\x00" + "\x00".join(item.options))
            out.append(random.Random(key).choice(LETTERS))
        return out


# --- OpenAI-compatible endpoints (vLLM, any hosted model) --------------------------------------------------------

class LetterReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: Literal["A", "B", "C", "D"]


class TextReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: Annotated[str, StringConstraints(min_length=1, max_length=200)]


Modality = Literal["none", "audio", "visual", "av"]
SYSTEM_PROMPTS: dict[str, str] = {
    "none": "You answer multiple-choice questions. Reply with the letter of the best option.",
    "audio": ("You answer multiple-choice questions about a video from a description of its sound track only "
              "(speech, ambient sound, voices, sound events, mood). Reply with the letter of the best option."),
    "visual": ("You answer multiple-choice questions about a video from a description of its pictures only. "
               "Reply with the letter of the best option."),
    "av": ("You answer multiple-choice questions about a video from timed descriptions of what is seen and "
           "heard, and a transcript of its speech. Reply with the letter of the best option."),
}
_AUDIO_AXES = ("narration", "environment", "timbre", "event", "emotion")


def _heard(d: ClipDescription) -> str:
    return "; ".join(f"{axis}: {getattr(d, axis).strip()}" for axis in _AUDIO_AXES if getattr(d, axis).strip())


def _clip_line(d: ClipDescription, modality: Modality, heard_from: ClipDescription | None = None,
               audio: str = "original") -> str:
    """One clip's line. Under a counterfactual audio condition the line is this clip's picture and the heard part
    of ``heard_from`` (another video's clip when swapped) or nothing (silence); the fused text, which mixes both,
    is not used then."""
    prefix = f"From {hms(d.start_s)} to {hms(d.end_s)}: "
    if audio != "original" and modality in ("av", "audio"):
        heard = _heard(heard_from) if heard_from is not None else ""
        if modality == "audio":
            return prefix + (heard or "no notable sound")
        return prefix + d.visual + (f" Heard: {heard}." if heard else "")
    if modality == "av":
        return d.fused
    if modality == "visual":
        return prefix + d.visual
    return prefix + (_heard(d) or "no notable sound")


def _fit(lines: list[str], budget: int) -> list[str]:
    # Every clip keeps a line (a question may be about any time); long lines are cut to share the budget.
    if not lines:
        return lines
    per_line = max(60, budget // len(lines))
    return [line if len(line) <= per_line else line[: per_line - 3].rstrip() + "..." for line in lines]


def video_context(context: BenchContext, video_id: str, modality: Modality, max_chars: int = 6000, *,
                  audio: str = "original", donor: str | None = None) -> str:
    """The clip timeline (and transcript, when the modality includes sound) the model reads instead of the video.
    ``audio``: "own" lays out this video's pictures and heard part as the counterfactuals do (not the fused text);
    "silence" drops the heard part and the transcript; "swapped" puts ``donor``'s in their place (its clips' heard
    parts in order, cycled over this video's clips; its transcript with its own times)."""
    if modality == "none":
        return ""
    descriptions = context.descriptions(video_id)
    heard_from: list[ClipDescription | None] = list(descriptions)
    speech = context.speech(video_id)
    if audio == "silence":
        heard_from, speech = [None] * len(descriptions), []
    elif audio == "swapped":
        if donor is None:
            raise ValueError("a swapped-audio context needs a donor video")
        donor_clips = context.descriptions(donor)
        heard_from = [donor_clips[i % len(donor_clips)] if donor_clips else None for i in range(len(descriptions))]
        speech = context.speech(donor)
    sections = []
    clips = _fit([_clip_line(d, modality, h, audio) for d, h in zip(descriptions, heard_from)],
                 max_chars if modality == "visual" else max_chars * 2 // 3)
    if clips:
        sections.append("Clips:\n" + "\n".join(clips))
    if modality in ("audio", "av"):
        lines = _fit([f"[{hms(s.start_s)}-{hms(s.end_s)}] {s.text.strip()}" for s in speech], max_chars // 3)
        if lines:
            sections.append("Transcript:\n" + "\n".join(lines))
    return "\n\n".join(sections) or "(no description of this video)"


def _run_async(coro):
    """Run ``coro`` to completion from sync code, also when the caller is itself inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@register("openai")
class OpenAIAdapter(ModelAdapter):
    """An OpenAI-compatible chat model reading the video's descriptions (per ``modality``) and the question.

    ``reply="letter"`` asks for the letter in a short plain-text reply (``max_tokens`` 8, no grammar) that the
    scorer's ranked extraction reads; ``reply="letter-json"`` constrains it to one letter by JSON-schema decoding
    (on a 2-core CPU server every such request first waits for its grammar: AVBench's filters send hundreds);
    ``reply="text"`` lets the model write up to 200 characters. An answer the extraction cannot read is wrong and
    counted, as with any model. Requests go through ``infra.llm_client`` (bounded concurrency, retries, its own
    request cache under ``context.cache_dir``).
    """

    def __init__(self, context: BenchContext | None = None, *, base_url: str | None = None,
                 model: str | None = None, api_key: str | None = None, modality: Modality = "av",
                 reply: Literal["letter", "letter-json", "text"] = "letter", max_tokens: int | str | None = None,
                 temperature: float | str = 0.0, seed: int | str = 0, max_context_chars: int | str = 6000,
                 max_concurrency: int | str | None = None, name: str | None = None, client: Any = None):
        super().__init__(context)
        if modality not in SYSTEM_PROMPTS:
            raise ValueError(f"modality must be one of {sorted(SYSTEM_PROMPTS)}, not {modality!r}")
        if reply not in ("letter", "letter-json", "text"):
            raise ValueError(f"reply must be 'letter', 'letter-json' or 'text', not {reply!r}")
        self.modality, self.reply = modality, reply
        self.max_tokens = int(max_tokens) if max_tokens is not None else (8 if reply == "letter" else 48)
        self.max_context_chars = int(max_context_chars)
        self._name = name
        self.client = client or self._client(base_url, model, api_key, float(temperature), int(seed),
                                             None if max_concurrency is None else int(max_concurrency))

    def _client(self, base_url, model, api_key, temperature, seed, max_concurrency):
        from schemas.settings import settings
        from infra.llm_client import LLMClient

        cache = self.context.cache_dir / "llm_cache.sqlite" if self.context.cache_dir else None
        overrides: dict[str, Any] = {"temperature": temperature, "seed": seed, "max_tokens": self.max_tokens}
        for key, value in (("base_url", base_url), ("model", model), ("api_key", api_key),
                           ("max_concurrency", max_concurrency)):
            if value is not None:
                overrides[key] = value
        return LLMClient.from_settings(settings().llm, cache_path=cache, **overrides)

    @property
    def model_name(self) -> str:
        if self._name:
            return self._name
        return f"{self.client.model}[{self.modality}]" if self.modality != "none" else f"{self.client.model}[blind]"

    @property
    def takes_audio(self) -> bool:
        return self.modality in ("av", "audio")

    @property
    def baseline_condition(self) -> str:
        return "own"  # its ordinary "av" input is the fused text; the counterfactuals lay out pictures and sound

    def fingerprint(self) -> str:
        return (f"openai:{self.client.model}:modality={self.modality}:reply={self.reply}:"
                f"max_tokens={self.max_tokens}:temperature={self.client.temperature}:seed={self.client.seed}"
                + self._audio_suffix())

    def messages(self, item: AVBenchItem) -> list[dict[str, str]]:
        question = mcq_text(item.question, item.options)
        donor = self.donor_of(item.video_id) if self.audio_condition == "swapped" else None
        ctx = video_context(self.context, item.video_id, self.modality, self.max_context_chars,
                            audio=self.audio_condition, donor=donor)
        user = f"{ctx}\n\n{question}" if ctx else question
        return [{"role": "system", "content": SYSTEM_PROMPTS[self.modality]}, {"role": "user", "content": user}]

    def prompt(self, item: AVBenchItem) -> str:
        return json.dumps(self.messages(item), ensure_ascii=False)

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        if not items:
            return []
        return _run_async(self._answer_all(list(items)))

    async def _answer_all(self, items: list[AVBenchItem]) -> list[str]:
        from infra.errors import StageError

        reply_model = LetterReply if self.reply == "letter-json" else TextReply

        async def one(i: int, item: AVBenchItem) -> str:
            try:
                if self.reply == "letter":
                    reply = await self.client.complete_text(
                        self.messages(item), _answer_text, reply_name="avbench_letter", stage=StageName.benchmark,
                        subject=item.video_id, item_id=item.item_id, max_tokens=self.max_tokens,
                        max_invalid_retries=0, accept_cut=True)
                    return reply.value
                reply = await self.client.complete_json(
                    self.messages(item), reply_model, schema_name=f"avbench_{self.reply}", stage=StageName.benchmark,
                    subject=item.video_id, item_id=item.item_id, max_tokens=self.max_tokens)
            except StageError as exc:
                self.errors[i] = f"{exc.error_class}: {exc.message}"
                return ""
            return reply.value.answer

        try:
            return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))
        finally:
            await self.client.aclose()


def _answer_text(text: str) -> str:
    """A plain-text answer as it came; the scorer extracts the letter (and counts a reply it cannot read)."""
    if not text.strip():
        raise ValueError("an empty answer")
    return text.strip()


@register("blind-llm")
class BlindLLMAdapter(OpenAIAdapter):
    """The question and options only: what a text-only model can answer without the video."""

    def __init__(self, context: BenchContext | None = None, **kwargs: Any):
        if kwargs.setdefault("modality", "none") != "none":
            raise ValueError("blind-llm has no modality: it never sees the video's descriptions")
        super().__init__(context, **kwargs)


@register("blind-hf")
class LocalBlindLMAdapter(ModelAdapter):
    """A second, different blind model: a causal LM from the model cache run in this process (no server), given
    only the question, picking the option it finds most likely as the question's answer (mean log-probability of
    the option's tokens after the question: the cloze scoring of lm-eval-harness; a 135M model asked for a
    letter answers "A" whatever the question, which measures nothing).

    AVBench drops an item as text-answerable only when two different blind models both answer it (as Daily-Omni
    does): one model's luck or bias then drops nothing. Default: SmolLM2-135M-Instruct, installed by ``make setup``
    (the served blind model is the profile's LLM, Qwen2.5-0.5B)."""

    def __init__(self, context: BenchContext | None = None, *, model: str = "smollm2-135m-instruct",
                 name: str | None = None, batch_size: int | str = 16):
        super().__init__(context)
        self.model_id, self._name, self.batch_size = model, name, int(batch_size)
        self._lm = None

    @property
    def model_name(self) -> str:
        return self._name or f"{self.model_id}[blind]"

    def fingerprint(self) -> str:
        return f"blind-hf:{self.model_id}:option-cloze"

    def _load(self):
        if self._lm is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from infra.model_cache import model_path

            path = model_path(self.model_id)
            tokenizer = AutoTokenizer.from_pretrained(path)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._lm = tokenizer, AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        return self._lm

    @staticmethod
    def context_text(item: AVBenchItem) -> str:
        return f"Question: {item.question}\nAnswer:"

    def prompt(self, item: AVBenchItem) -> str:
        return self.context_text(item) + "\n" + "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(item.options))

    def _option_scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Mean log-probability of each continuation's tokens after its context (right-padded batches)."""
        import torch

        tokenizer, lm = self._load()
        scores: list[float] = []
        for lo in range(0, len(pairs), self.batch_size):
            chunk = pairs[lo:lo + self.batch_size]
            ctx_ids = [tokenizer.encode(c, add_special_tokens=False) for c, _ in chunk]
            full_ids = [tokenizer.encode(c + " " + o, add_special_tokens=False) for c, o in chunk]
            width = max(len(f) for f in full_ids)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, f in enumerate(full_ids):
                ids[i, :len(f)], mask[i, :len(f)] = torch.tensor(f), 1
            with torch.no_grad():
                logp = torch.log_softmax(lm(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for i, (c, f) in enumerate(zip(ctx_ids, full_ids)):
                start = min(len(c), len(f) - 1)  # the option's first token (tokenisation may merge at the seam)
                targets = torch.tensor(f[start:])
                scores.append(float(logp[i, start - 1:len(f) - 1].gather(1, targets[:, None]).mean()))
        return scores

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        pairs = [(self.context_text(it), o) for it in items for o in it.options]
        try:
            scores = self._option_scores(pairs)
        except Exception as exc:  # noqa: BLE001 — weights unreadable, out of memory: every item unanswered, a filter undecided
            self.errors = {i: f"{type(exc).__name__}: {exc}" for i in range(len(items))}
            return [""] * len(items)
        return [LETTERS[max(range(4), key=lambda k: scores[4 * i + k])] for i in range(len(items))]


# --- SAVEn-Vid ------------------------------------------------------------------------------------------------

def _checkpoint_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "trainable.safetensors", "meta.json"):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a SAVEn-Vid checkpoint: {name} is missing")
        h.update(name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@register("saven-vid")
class SavenVidAdapter(ModelAdapter):
    """A trained SAVEn-Vid checkpoint (``model.generate``) over the dataset's cached encoder features.

    The prompt is the training prompt (``model.data.mcq_prompt``), so the model is asked exactly as it learned.
    Features missing from the cache are computed with the checkpoint's own encoders and cached.
    """

    def __init__(self, context: BenchContext | None = None, *, checkpoint: str | Path, device: str | None = None,
                 batch_size: int | str = 4, max_new_tokens: int | str = 32, name: str | None = None):
        super().__init__(context)
        self.checkpoint = Path(checkpoint)
        self.device, self.batch_size, self.max_new_tokens = device, int(batch_size), int(max_new_tokens)
        self._digest = _checkpoint_digest(self.checkpoint)
        self._name = name
        self._loaded: dict[str, Any] = {}  # shared with ``with_audio`` twins: the checkpoint is loaded once

    @property
    def model_name(self) -> str:
        return self._name or f"saven-vid:{self.checkpoint.name}"

    def fingerprint(self) -> str:
        return f"saven-vid:{self._digest}:max_new_tokens={self.max_new_tokens}" + self._audio_suffix()

    @property
    def takes_audio(self) -> bool:
        return True

    def _heard_features(self, feats, video: VideoRecord):
        """``feats`` with the audio of this run's condition: the audio encoder's tokens of a silent track, or the
        donor video's audio tokens with their times stretched onto this video's duration."""
        if self.audio_condition == "silence":
            return self.predictor().with_silent_audio(feats)
        if self.audio_condition == "swapped":
            donor_id = self.donor_of(video.video_id)
            donor = self.context.video(donor_id)
            if donor is None:
                raise LookupError(f"donor video {donor_id} is not in the dataset's videos table")
            heard = self.predictor().features(self.context.dataset_dir, donor, self.context.clips(donor_id))
            return self.predictor().with_audio_of(feats, heard)
        return feats

    def prompt(self, item: AVBenchItem) -> str:
        from model.data import mcq_prompt

        return mcq_prompt(item.question, item.options)

    def predictor(self):
        if "predictor" not in self._loaded:
            from model.generate import SavenVidPredictor

            self._loaded["predictor"] = SavenVidPredictor.from_checkpoint(self.checkpoint, self.device)
        return self._loaded["predictor"]

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        if self.context.dataset_dir is None:
            raise ValueError("the saven-vid adapter needs a BenchContext with the dataset folder (features)")
        predictor = self.predictor()
        answers = [""] * len(items)
        by_video: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            by_video[item.video_id].append(i)
        requests, where = [], []
        for video_id, indices in sorted(by_video.items()):
            try:
                video = self.context.video(video_id)
                if video is None:
                    raise LookupError(f"video {video_id} is not in the dataset's videos table")
                feats = predictor.features(self.context.dataset_dir, video, self.context.clips(video_id))
                feats = self._heard_features(feats, video)
            except Exception as exc:  # noqa: BLE001 — one video without features must not stop the others; recorded
                for i in indices:
                    self.errors[i] = f"{type(exc).__name__}: {exc}"
                continue
            for i in indices:
                requests.append((feats, self.prompt(items[i])))
                where.append(i)
        if requests:
            out = predictor.answer_many(requests, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                                        query_texts=[items[i].question for i in where])
            for i, text in zip(where, out, strict=True):
                answers[i] = text
        return answers
