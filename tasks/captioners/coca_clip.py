"""``open-clip``: open_clip CoCa writes the caption, a CLIP model scores ``labels`` zero-shot for the tags (both
loaded once; the label text embeddings are computed once at load). The GPU profile's captioner: its pretrained
weights come from the model hub.

CoCa captions are decoded greedily here rather than through ``CoCa.generate``: that method needs
``transformers.BeamSearchScorer``, which transformers 5 removed, and greedy decoding is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from infra import model_cache
from schemas.records import Tag
from schemas.settings import VisualCaptioner
from tasks.captioners import CAPTIONERS
from tasks.captioners.coco import coco_names

TOP_K_TAGS = 5
MIN_TAG_SCORE = 0.05
CAPTION_MAX_TOKENS = 30
CAPTION_MIN_TOKENS = 5
PROMPT = "a photo of {}."
SOT_TOKEN, EOT_TOKEN = 49406, 49407  # open_clip's SimpleTokenizer
DEFAULT_LABELS = (
    "a person", "a group of people", "a face", "an animal", "a bird", "a dog", "a cat", "a car", "a street",
    "a building", "a room", "a kitchen", "an office", "a city", "a landscape", "a forest", "a mountain", "the sea",
    "a beach", "the sky", "a river", "food", "a screen", "text", "a diagram", "a cartoon", "an animation",
    "a video game", "a sports game", "a concert", "a musical instrument", "a vehicle", "night", "snow",
    "a colourful abstract pattern", "a black-and-white film",
)


OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def open_clip_source(name: str, pretrained: str | None) -> tuple[str, str | None]:
    """What open_clip is asked to load. A hub repository (``laion/CLIP-ViT-L-14-laion2B-s32B-b82K``) is its
    prefetched folder: with the repository's ``open_clip_config.json`` (laion's have one) the folder states its own
    architecture (``local-dir:``); without, the profile's model name and the folder's weights file. A file path or
    an open_clip tag is passed as given. open_clip builds a random model when a folder has no weights: refused."""
    if pretrained is None or "/" not in pretrained or Path(pretrained).is_file():
        return name, pretrained
    folder = Path(model_cache.resolve(pretrained))
    found = [folder / f for f in OPEN_CLIP_WEIGHTS if (folder / f).is_file()]
    if not found:
        raise model_cache.ModelCacheError(f"{pretrained}: no open_clip weights ({', '.join(OPEN_CLIP_WEIGHTS)}) in "
                                          f"{folder}")
    if (folder / "open_clip_config.json").is_file():
        return f"local-dir:{folder}", None
    return name, str(found[0])


def _open_clip_model(name: str, pretrained: str | None, device: str):
    """(model, preprocess, tokenizer) of one open_clip model."""
    import open_clip

    name, pretrained = open_clip_source(name, pretrained)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, cache_dir=str(model_cache.cache_dir() / "open_clip"))
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


@CAPTIONERS.register("open-clip")
class OpenClipCaptioner:
    """CoCa captions plus CLIP zero-shot tags over a label vocabulary."""

    @staticmethod
    def model_card(cfg: VisualCaptioner) -> str:
        return (f"CoCa `{cfg.coca_model}` ({cfg.coca_pretrained}) captions, CLIP `{cfg.clip_model}` "
                f"({cfg.clip_pretrained}) zero-shot tags")

    @staticmethod
    def models(cfg: VisualCaptioner) -> list[str]:
        """The hub repositories of its weights (an open_clip tag or a file needs no prefetch)."""
        return sorted({p for p in (cfg.coca_pretrained, cfg.clip_pretrained) if p and "/" in p
                       and not Path(p).is_file()})

    @staticmethod
    def vocabulary(cfg: VisualCaptioner) -> list[str]:
        """CLIP's zero-shot labels and COCO's classes (what CoCa's captions were trained to name)."""
        return [label.removeprefix("a ").removeprefix("an ").removeprefix("the ")
                for label in (cfg.labels or DEFAULT_LABELS)] + coco_names()

    def __init__(self, cfg: VisualCaptioner):
        import torch

        self.device = cfg.device
        self.coca, self.coca_preprocess, tokenizer = _open_clip_model(cfg.coca_model, cfg.coca_pretrained,
                                                                      cfg.device)
        if (cfg.clip_model, cfg.clip_pretrained) == (cfg.coca_model, cfg.coca_pretrained):
            self.clip, self.clip_preprocess = self.coca, self.coca_preprocess
        else:
            self.clip, self.clip_preprocess, tokenizer = _open_clip_model(cfg.clip_model, cfg.clip_pretrained,
                                                                          cfg.device)
        self.labels = list(cfg.labels or DEFAULT_LABELS)
        with torch.inference_mode():
            text = self.clip.encode_text(tokenizer([PROMPT.format(label) for label in self.labels]).to(self.device))
            self.label_features = text / text.norm(dim=-1, keepdim=True)
        self.name = f"coca:{cfg.coca_model}+clip:{cfg.clip_model}"

    def _batch(self, preprocess, frames: list[np.ndarray]):
        import torch
        from PIL import Image

        images = [preprocess(Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))) for f in frames]
        return torch.stack(images).to(self.device)

    def captions(self, images) -> list[str]:
        import open_clip

        tokens = coca_greedy(self.coca, images, CAPTION_MAX_TOKENS, CAPTION_MIN_TOKENS)
        out = []
        for row in tokens:
            text = open_clip.decode(row).split("<end_of_text>")[0].replace("<start_of_text>", "").strip()
            out.append(text)
        return out

    def tags(self, images) -> list[list[Tag]]:
        import torch

        with torch.inference_mode():
            feats = self.clip.encode_image(images)
            feats = feats / feats.norm(dim=-1, keepdim=True)
            probs = torch.softmax(100.0 * feats @ self.label_features.T, dim=-1).float().cpu().numpy()
        out = []
        for row in probs:
            top = np.argsort(-row)[:TOP_K_TAGS]
            out.append([Tag(label=self.labels[j], score=float(row[j])) for j in top if row[j] >= MIN_TAG_SCORE])
        return out

    def describe(self, frames: list[np.ndarray]) -> list[tuple[str, list[Tag]]]:
        if not frames:
            return []
        coca_images = self._batch(self.coca_preprocess, frames)
        clip_images = coca_images if self.clip is self.coca else self._batch(self.clip_preprocess, frames)
        caps, tags = self.captions(coca_images), self.tags(clip_images)
        # A caption a model could not put into words still has its tags: say so instead of writing nothing.
        return [(cap or ("an image of " + tag_list[0].label if tag_list else "an image"), tag_list)
                for cap, tag_list in zip(caps, tags)]


def coca_greedy(model, images, max_tokens: int, min_tokens: int):
    """Greedy CoCa decoding: the image is encoded once; the text decoder extends every row by its best token."""
    import torch

    with torch.inference_mode():
        image_latent, image_embs = model._encode_image(images)
        batch = images.shape[0]
        tokens = torch.full((batch, 1), SOT_TOKEN, dtype=torch.long, device=images.device)
        done = torch.zeros(batch, dtype=torch.bool, device=images.device)
        for step in range(max_tokens):
            logits = model(images, tokens, image_latent=image_latent, image_embs=image_embs,
                           output_labels=False)["logits"][:, -1]
            if step < min_tokens:
                logits[:, EOT_TOKEN] = float("-inf")
            if step == max_tokens - 1:
                nxt = torch.full((batch,), EOT_TOKEN, dtype=torch.long, device=images.device)
            else:
                nxt = logits.argmax(dim=-1)
            nxt = torch.where(done, torch.full_like(nxt, EOT_TOKEN), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == EOT_TOKEN
            if bool(done.all()):
                break
    return tokens
