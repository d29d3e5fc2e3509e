"""The embedded profile's keyframe describer ("opencv-describer-v1"): measured facts about a frame, not a neural
caption.

No CLIP/CoCa weights can be had offline, so each keyframe is described from what classical tools measure:
named colours (HSV bins), brightness and colourfulness, edge density, faces (OpenCV Haar cascade from Debian's
opencv-data), on-screen text (tesseract OCR), and motion between the clip's keyframes. The text says "frame" and
lists facts; it never names objects it cannot see.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from schemas.records import Tag
from schemas.settings import VisualCaptioner
from tasks.captioners import CAPTIONERS
from tasks.captioners.coco import coco_names

NAME = "opencv-describer-v1"
HAAR_DIRS = (Path("/usr/share/opencv4/haarcascades"), Path("/usr/share/opencv/haarcascades"),
             Path("/usr/local/share/opencv4/haarcascades"))
FACE_CASCADE = "haarcascade_frontalface_default.xml"
COLOUR_WIDTH = 96  # colour statistics on a small copy: a few thousand pixels are plenty
MIN_COLOUR_SHARE = 0.12
OCR_MIN_CONF = 60.0
OCR_TIMEOUT_S = 30.0
# (name, hue range in OpenCV's 0-180 scale) for saturated, not-too-dark pixels.
HUES = (("red", 0, 8), ("orange", 8, 20), ("yellow", 20, 34), ("green", 34, 85), ("cyan", 85, 100),
        ("blue", 100, 130), ("purple", 130, 150), ("pink", 150, 170), ("red", 170, 181))


class DescriberSetupError(RuntimeError):
    """A tool the describer needs (tesseract, Haar cascades, OpenCV's cascade classifier) is missing."""


@dataclass
class FrameFacts:
    colours: list[tuple[str, float]]
    brightness: float  # mean V in [0, 1]
    colourfulness: float  # Hasler & Suesstrunk, roughly 0 (grey) to 1 (vivid)
    edge_density: float
    faces: list[tuple[int, int, int, int]]
    face_score: float
    text: str
    text_conf: float
    motion: float | None = None  # mean abs grey difference to the neighbouring keyframe, 0-1
    extra: dict = field(default_factory=dict)


def haar_path() -> Path:
    for folder in HAAR_DIRS:
        if (folder / FACE_CASCADE).is_file():
            return folder / FACE_CASCADE
    raise DescriberSetupError(f"{FACE_CASCADE} not found in {', '.join(map(str, HAAR_DIRS))} "
                              "(Debian package opencv-data); run `make setup`")


def named_colours(bgr: np.ndarray) -> list[tuple[str, float]]:
    """Colour names covering at least MIN_COLOUR_SHARE of the frame, largest share first."""
    h, w = bgr.shape[:2]
    small = cv2.resize(bgr, (COLOUR_WIDTH, max(1, round(h * COLOUR_WIDTH / w))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(int)
    hue, sat, val = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    names = np.full(hue.shape[0], "", dtype=object)
    grey = sat < 45
    names[(val < 50)] = "black"
    names[grey & (val >= 50) & (val < 200)] = "grey"
    names[grey & (val >= 200)] = "white"
    chroma = (names == "") & ~grey
    for name, lo, hi in HUES:
        sel = chroma & (hue >= lo) & (hue < hi)
        names[sel] = "brown" if name == "orange" else name
        if name == "orange":  # dark orange is brown
            names[sel & (val >= 150)] = "orange"
    shares: dict[str, float] = {}
    for name in names:
        shares[name] = shares.get(name, 0) + 1
    total = float(names.shape[0])
    ranked = sorted(((n, c / total) for n, c in shares.items() if n), key=lambda x: -x[1])
    return [(n, round(s, 3)) for n, s in ranked if s >= MIN_COLOUR_SHARE]


def colourfulness(bgr: np.ndarray) -> float:
    b, g, r = (bgr[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    value = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(min(1.0, value / 150.0))


def text_regions(grey: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes that look like lines of text: strong local contrast, closed horizontally, wider than tall."""
    grad = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    _, bw = cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    closed = cv2.morphologyEx(bw, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (15, 3)))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    height = grey.shape[0]
    boxes = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        fill = cv2.countNonZero(bw[y:y + h, x:x + w]) / float(w * h)
        if 8 <= h < height / 3 and w >= 2 * h and 0.15 < fill < 0.9:
            boxes.append((x, y, w, h))
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def _line_sheet(grey: np.ndarray, boxes: list[tuple[int, int, int, int]], pad: int = 8) -> np.ndarray | None:
    """The text boxes stacked on one page, each made dark-on-light, so tesseract reads them in one call."""
    if not boxes:
        return None
    width = grey.shape[1] + 2 * pad
    rows = []
    for x, y, w, h in boxes:
        crop = grey[max(0, y - pad):y + h + pad, max(0, x - pad):x + w + pad]
        border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
        bg = int(np.median(border))
        row = np.full((crop.shape[0] + 2 * pad, width), bg, dtype=np.uint8)
        row[pad:pad + crop.shape[0], pad:pad + crop.shape[1]] = crop
        rows.append(255 - row if bg < 128 else row)
    return np.vstack(rows)


class Tesseract:
    """tesseract CLI through an argument list (TSV output), one process per page."""

    def __init__(self, lang: str = "eng"):
        self.exe = shutil.which("tesseract")
        if self.exe is None:
            raise DescriberSetupError("tesseract is not installed (Debian package tesseract-ocr); run `make setup`")
        self.lang = lang
        # One OCR thread: with OpenMP on a shared 2-core box tesseract is several times slower.
        self.env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def words(self, grey: np.ndarray, psm: int) -> list[tuple[str, float, int, int]]:
        """(word, confidence 0-100, top, left) for each word tesseract reads with OCR_MIN_CONF or more."""
        ok, png = cv2.imencode(".png", grey)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        proc = subprocess.run([self.exe, "stdin", "stdout", "-l", self.lang, "--psm", str(psm), "tsv"],
                              input=png.tobytes(), capture_output=True, timeout=OCR_TIMEOUT_S, env=self.env,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"tesseract failed: {proc.stderr.decode('utf-8', 'replace').strip()[-300:]}")
        out = []
        for line in proc.stdout.decode("utf-8", "replace").splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) < 12 or not cols[11].strip():
                continue
            word = re.sub(r"^[^\w]+|[^\w]+$", "", cols[11].strip())
            conf = float(cols[10])
            if conf >= OCR_MIN_CONF and sum(ch.isalnum() for ch in word) >= 2:
                out.append((word, conf, int(cols[7]), int(cols[6])))
        return out


def read_text(ocr: Tesseract, grey: np.ndarray) -> tuple[str, float]:
    """On-screen text from ONE tesseract call on a page holding the frame and, below it, its detected text lines
    made dark-on-light (they catch light text on a dark box that a whole-frame pass misses). Each word is kept
    once, the frame's own reading order first."""
    sheet = _line_sheet(grey, text_regions(grey))
    page = grey
    if sheet is not None:
        width = max(grey.shape[1], sheet.shape[1])
        page = np.vstack([np.pad(grey, ((0, 0), (0, width - grey.shape[1])), constant_values=255),
                          np.full((20, width), 255, dtype=np.uint8),
                          np.pad(sheet, ((0, 0), (0, width - sheet.shape[1])), constant_values=255)])
    seen: set[str] = set()
    words: list[tuple[str, float]] = []
    for word, conf, _top, _left in ocr.words(page, psm=11):
        if word.casefold() not in seen:
            seen.add(word.casefold())
            words.append((word, conf))
    if not words:
        return "", 0.0
    return " ".join(w for w, _ in words), float(np.mean([c for _, c in words]) / 100.0)


def keyframe_motion(frames: list[np.ndarray]) -> list[float | None]:
    """Per keyframe of one clip: mean absolute grey difference (0-1) to the one before it (the first: to the next);
    None for a clip's only keyframe."""
    greys = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (64, 36), interpolation=cv2.INTER_AREA)
             .astype(np.float32) / 255.0 for f in frames]
    out: list[float | None] = []
    for i in range(len(greys)):
        j = i - 1 if i > 0 else i + 1
        out.append(float(np.mean(np.abs(greys[i] - greys[j]))) if 0 <= j < len(greys) else None)
    return out


def detect_faces(cascade, grey: np.ndarray):
    """Haar-cascade faces with this project's settings: (rects, level weights)."""
    side = min(grey.shape)
    rects, _, weights = cascade.detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=5,
                                                  minSize=(max(16, side // 20),) * 2, outputRejectLevels=True)
    return rects, weights


def colour_tags(colours: list[tuple[str, float]], brightness: float) -> list[Tag]:
    """The colour and brightness tags both describers give a frame."""
    tags = [Tag(label=f"colour:{name}", score=share) for name, share in colours]
    tags.append(Tag(label=f"brightness:{brightness_word(brightness).split()[-1]}", score=round(brightness, 3)))
    return tags


def motion_tags(motion: float | None) -> list[Tag]:
    if motion is None:
        return []
    return [Tag(label=f"motion:{motion_word(motion).replace(' ', '-')}", score=round(min(1.0, motion * 5), 3))]


def brightness_word(v: float) -> str:
    return "dark" if v < 0.25 else ("dim" if v < 0.45 else ("bright" if v > 0.7 else "moderately lit"))


def motion_word(m: float) -> str:
    return "static" if m < 0.02 else ("some movement" if m < 0.08 else "large change")


class FrameDescriber:
    """A captioner that measures facts per keyframe (``facts``), adds the motion between neighbouring keyframes, and
    renders each as a sentence (``render``) and tags (``tags``)."""

    def describe(self, frames: list[np.ndarray]) -> list[tuple[str, list[Tag]]]:
        """(text, tags) per keyframe of ONE clip, in order (motion compares neighbouring keyframes)."""
        facts = [self.facts(f) for f in frames]
        for fact, motion in zip(facts, keyframe_motion(frames)):
            fact.motion = motion
        return [(self.render(f), self.tags(f)) for f in facts]


@CAPTIONERS.register("opencv-describer")
class OpenCVDescriber(FrameDescriber):
    """Facts about keyframes from OpenCV, Haar cascades and tesseract (no learned caption model)."""

    name = NAME
    model_card = "OpenCV colours, brightness and motion, Haar-cascade faces, tesseract OCR; no trained caption model"
    # It names no object class, so a COCO thing named in a question is one it never saw.
    vocabulary = staticmethod(lambda cfg: coco_names())

    def __init__(self, cfg: VisualCaptioner | None = None):
        if not hasattr(cv2, "CascadeClassifier"):
            raise DescriberSetupError(
                f"this OpenCV ({cv2.__version__}) has no CascadeClassifier (removed in OpenCV 5); the describer "
                "needs opencv-python-headless<5 (and opencv-python<5, which scenedetect pulls in)")
        self.faces = cv2.CascadeClassifier(str(haar_path()))
        if self.faces.empty():
            raise DescriberSetupError(f"could not load the Haar cascade {haar_path()}")
        self.ocr = Tesseract()

    def facts(self, bgr: np.ndarray) -> FrameFacts:
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
        edges = cv2.Canny(grey, 100, 200)
        rects, weights = detect_faces(self.faces, grey)
        faces = [tuple(int(v) for v in r) for r in rects]
        text, conf = read_text(self.ocr, grey)
        return FrameFacts(colours=named_colours(bgr), brightness=float(hsv[..., 2].mean() / 255.0),
                          colourfulness=colourfulness(bgr), edge_density=float(np.count_nonzero(edges) / edges.size),
                          faces=faces, face_score=float(min(1.0, max(weights, default=0.0) / 5.0)) if faces else 0.0,
                          text=text, text_conf=conf)

    @staticmethod
    def tags(f: FrameFacts) -> list[Tag]:
        tags = colour_tags(f.colours, f.brightness)
        vivid = "colourful" if f.colourfulness >= 0.35 else ("muted" if f.colourfulness >= 0.1 else "monochrome")
        tags.append(Tag(label=f"colourfulness:{vivid}", score=round(f.colourfulness, 3)))
        tags.append(Tag(label="detail:" + ("busy" if f.edge_density > 0.08 else "plain"),
                        score=round(min(1.0, f.edge_density * 5), 3)))
        if f.faces:
            tags.append(Tag(label=f"faces:{len(f.faces)}", score=round(f.face_score, 3)))
        if f.text:
            tags.append(Tag(label=f"text:{f.text}", score=round(f.text_conf, 3)))
        return tags + motion_tags(f.motion)

    @staticmethod
    def render(f: FrameFacts) -> str:
        vivid = "colourful" if f.colourfulness >= 0.35 else ("muted" if f.colourfulness >= 0.1 else "black-and-white")
        parts = [f"A {brightness_word(f.brightness)}, {vivid} frame"]
        if f.colours:
            names = [n for n, _ in f.colours[:3]]
            parts[0] += " mostly " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])
        parts.append(f'on-screen text reads "{f.text}"' if f.text else "no readable on-screen text")
        n = len(f.faces)
        parts.append("no face detected" if n == 0 else (f"{n} face{'s' if n > 1 else ''} detected"))
        if f.motion is not None:
            parts.append(f"{motion_word(f.motion)} between keyframes")
        parts.append("busy, detailed texture" if f.edge_density > 0.08 else "plain, smooth areas")
        return "; ".join(parts) + "."
