"""Why a SAVEn-Vid checkpoint does or does not answer from the video: measurements on AVBench's held-out videos.

Each figure compares the checkpoint with the same architecture at its initialisation (``SavenVid.build`` seeded as
training seeds it: TLP and AVTS random, LoRA's B at zero, so the LLM starts as the base model), on the held-out
multiple-choice examples (the videos AVBench is built from; never trained on):

- ``answer_loss``: the mean loss on the answer tokens ("B. <option text>" + EOS), as in training. Does training
  lower it on videos it never saw?
- ``letter_loss`` and ``letter_accuracy``: the loss on the answer's first token, the letter (what scoring reads),
  and how often the letter the model rates highest among A-D is the right one.
- ``letter_loss_without_video`` / ``_without_audio`` / ``_without_both``: the same letter loss with the video (or
  audio, or both) encoder features zeroed before the resampler. A model that uses a sense does worse without it
  (its loss rises); the same loss either way means the answer does not depend on that sense at all.
- ``attention_on_multimodal``: at the position that predicts the letter, the share of attention (mean over heads
  and layers) on the interleaved video/audio/time tokens, beside ``multimodal_share_of_sequence`` (what uniform
  attention would give). Far below it: the LLM hardly looks at the video.
- ``multimodal_norm_ratio``: the mean length (L2 norm) of the interleaved tokens over that of the text tokens'
  embeddings. Tokens far shorter than the words around them are easy for attention to pass over; far longer ones
  swamp the prompt.
- ``top_letter_share``: the share of items whose highest-rated letter is the most common one. Near 1: the model
  learned the answer format (a letter first), not the answer.

``python -m model.diagnose CHECKPOINT DATASET [--json OUT]``; ``saven train`` does not run it (it re-reads every
held-out example five times with two models in memory, eager attention included: minutes at the smol preset on
2 cores; at 7b, a GPU machine's job: two fp32 copies of the LLM).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from model.data import IGNORE, FeatureStore, SavenVidDataset, collate, load_examples
from model.modeling import SavenVid
from schemas.mcq import LETTERS

ABLATIONS = {"": (), "_without_video": ("video",), "_without_audio": ("audio",), "_without_both": ("video", "audio")}


def letter_ids(tokenizer) -> list[int]:
    """The token id of each letter as the answer's first token ("B. ..." starts with the letter's own token)."""
    ids = [tokenizer(f"{letter}.", add_special_tokens=False)["input_ids"][0] for letter in LETTERS]
    if len(set(ids)) != len(LETTERS):
        raise ValueError(f"the tokenizer does not give the letters distinct first tokens: {ids}")
    return ids


def _attention_on(attentions: tuple[torch.Tensor, ...], slots: torch.Tensor, attention_mask: torch.Tensor,
                  where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the mean share of attention (heads, layers) from its ``where`` position onto its placeholder
    positions (``slots``), and the placeholders' share of the positions it can attend to."""
    rows = torch.arange(len(where))
    mass = torch.stack([a[rows, :, where, :] for a in attentions])  # [layers, B, heads, seq]
    on_mm = (mass * slots[None, :, None, :]).sum(-1).mean(dim=(0, 2))  # [B]
    visible = attention_mask.bool() & (torch.arange(slots.shape[1])[None] <= where[:, None])
    return on_mm, (slots & visible).sum(1) / visible.sum(1)


@torch.no_grad()
def measure(model: SavenVid, dataset: SavenVidDataset, batch_size: int = 4, attention: bool = True) -> dict:
    """The figures of the module's docstring for one model over ``dataset`` (examples with their answers)."""
    model.eval()
    letters = torch.tensor(letter_ids(model.tokenizer))
    sums: Counter = Counter()
    top: Counter = Counter()
    n = tokens = 0
    for lo in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(lo, min(lo + batch_size, len(dataset)))],
                        model.tokenizer.pad_token_id)
        labels = batch["labels"]
        first = (labels != IGNORE).float().argmax(1)  # the answer's first token: the letter
        where = first - 1  # the position whose logits predict it
        rows = torch.arange(len(first))
        gold = labels[rows, first]
        slots = batch["input_ids"] == model.placeholder_id
        for suffix, zeroed in ABLATIONS.items():
            b = {**batch, **{k: torch.zeros_like(batch[k]) for k in zeroed}}
            mm, counts = model.multimodal_tokens(b)
            emb = model.embed(b["input_ids"], mm, counts)
            # One forward per condition; the own-features one also returns the attention weights when asked.
            out = model.llm(inputs_embeds=emb, attention_mask=b["attention_mask"],
                            output_attentions=attention and not suffix)
            at = out.logits[rows, where]
            sums[f"letter_loss{suffix}"] += float(torch.nn.functional.cross_entropy(at, gold, reduction="sum"))
            if suffix:
                continue
            text = b["attention_mask"].bool() & ~slots
            sums["multimodal_norm_ratio"] += len(first) * float(
                emb[slots].norm(dim=-1).mean() / emb[text].norm(dim=-1).mean())
            shifted, target = out.logits[:, :-1], labels[:, 1:]
            mask = target != IGNORE
            sums["answer_loss"] += float(torch.nn.functional.cross_entropy(
                shifted[mask], target[mask], reduction="sum"))
            tokens += int(mask.sum())
            picked = at[:, letters].argmax(1)
            sums["letter_accuracy"] += float((letters[picked] == gold).sum())
            top.update(picked.tolist())
            if attention:
                on_mm, share = _attention_on(out.attentions, slots, b["attention_mask"], where)
                sums["attention_on_multimodal"] += float(on_mm.sum())
                sums["multimodal_share_of_sequence"] += float(share.sum())
        n += len(first)
    out = {k: v / n for k, v in sums.items() if k != "answer_loss"}
    out["answer_loss"] = sums["answer_loss"] / max(tokens, 1)
    out["top_letter_share"] = max(top.values()) / n if top else None
    out["examples"] = n
    return out


def eager_attention(model: SavenVid) -> None:
    """Attention weights are only returned by the eager implementation (SDPA fuses them away)."""
    base = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
    base.set_attn_implementation("eager")


def diagnose(checkpoint: Path, dataset_dir: Path, *, batch_size: int = 4, attention: bool = True) -> dict:
    """The checkpoint against its architecture at initialisation, on the held-out examples."""
    from model.config import ModelConfig

    trained = SavenVid.from_pretrained(checkpoint)
    config = ModelConfig.load(Path(checkpoint))
    from model.features import features_path

    examples = load_examples(Path(dataset_dir), 2, heldout_only=True)
    # Training caches the features of the held-out videos it evaluates on; any other held-out video is left out.
    examples = [e for e in examples if features_path(Path(dataset_dir), config.preset, e.video_id).is_file()]
    if not examples:
        raise ValueError(f"{dataset_dir}: no held-out video with questions and cached {config.preset} features: "
                         "nothing to diagnose on (`saven train` caches them)")
    store = FeatureStore(Path(dataset_dir), config.preset, trained.encoder_fingerprints or None)
    torch.manual_seed(config.train.seed)  # as training seeds the model it builds
    initial = SavenVid.build(config, tokenizer=trained.tokenizer)
    report = {"checkpoint": str(checkpoint), "examples": len(examples)}
    for name, model in (("trained", trained), ("initial", initial)):
        if attention:
            eager_attention(model)
        report[name] = measure(model, SavenVidDataset(examples, store, model.tokenizer, config), batch_size,
                               attention)
    return report


def verdicts(report: dict) -> list[str]:
    """What the figures say, in sentences (the README's reading of them)."""
    t, i = report["trained"], report["initial"]
    said = [f"answer loss {i['answer_loss']:.3f} -> {t['answer_loss']:.3f} on {report['examples']} held-out "
            f"examples; letter loss {i['letter_loss']:.3f} -> {t['letter_loss']:.3f}, letter accuracy "
            f"{100 * t['letter_accuracy']:.1f}% (initial {100 * i['letter_accuracy']:.1f}%)"]
    for sense in ("video", "audio", "both"):
        rise = t[f"letter_loss_without_{sense}"] - t["letter_loss"]
        reading = "higher: the letter depends on it" if rise > 0.01 else "not higher: the letter does not need it"
        said.append(f"without {sense}: letter loss {rise:+.4f} ({reading})")
    if "attention_on_multimodal" in t:
        said.append(f"attention on the multimodal tokens {100 * t['attention_on_multimodal']:.1f}% (initial "
                    f"{100 * i['attention_on_multimodal']:.1f}%) where they are "
                    f"{100 * t['multimodal_share_of_sequence']:.1f}% of the sequence")
    said.append(f"the interleaved tokens are {t['multimodal_norm_ratio']:.2f}x as long (L2) as the text's embeddings "
                f"(initial {i['multimodal_norm_ratio']:.2f}x)")
    said.append(f"the most common letter is the top one for {100 * t['top_letter_share']:.0f}% of the items")
    return said


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("dataset", type=Path)
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-attention", action="store_true", help="skip the attention pass (eager attention)")
    args = p.parse_args(argv)
    report = diagnose(args.checkpoint, args.dataset, batch_size=args.batch_size, attention=not args.no_attention)
    report["verdicts"] = verdicts(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(report["verdicts"]))
    return report


if __name__ == "__main__":
    main()
