"""Signal analysis of a 16 kHz waveform: the ``signal-analysis`` audio tagger ("signal-analysis-v1").

No pretrained audio tagger can be had offline, so this module labels sound from measures that need no training:

- speech regions from Silero VAD (the ONNX model faster-whisper ships), run once over the whole waveform;
- per 32 ms frame (the VAD's own window, so the two line up): loudness, spectral flatness (noise is flat),
  peakiness (share of energy at the strongest peak: a pure tone is one peak), centroid, slope, pitch;
- onsets (sudden loudness rises) and runs of evenly spaced onsets, which are rhythm and give a tempo.

Each frame gets one sound class (speech > rhythm > silence > tone > noise > music > sound), the classes are
smoothed and merged into timed spans, and each span gets descriptors on the other axes (timbre, event, emotion).
The emotion words are heuristic mood cues from tempo, loudness and pitch movement, not a trained emotion model.
Everything is on the waveform's own timeline: sample ``k`` is at ``k / 16000`` s.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from schemas.handoff import SAMPLE_RATE
from schemas.records import AudioAxis
from schemas.settings import AudioTagger
from tasks.taggers import TAGGERS, Span

HOP = 512  # Silero VAD scores 512-sample windows at 16 kHz
N_FFT = 1024
FRAME_S = HOP / SAMPLE_RATE
BLOCK_FRAMES = 4096  # ~2 min of frames analysed at a time
TAGGER_NAME = "signal-analysis-v1"

SILENCE_DB = -50.0  # dBFS of a frame's RMS below which nothing audible is there
TONE_PEAKINESS = 0.6  # share of a frame's energy within +-2 bins of its strongest peak
NOISE_FLATNESS = 0.2  # white noise ~0.56, pink ~0.3 over 50 Hz-8 kHz; speech and music stay well below
MUSIC_FLATNESS = 0.1  # between the two: a mix of tonal and noisy sound ("sound")
TONE_PITCH_STABILITY = 0.8  # a tone run keeps its peak within 3% of its median in this share of loud frames
PERCUSSIVE_DECAY_DB = 6.0  # a beat decays this much within 256 ms of its onset; a tone or noise burst does not
ONSET_RISE_DB = 12.0  # loudness rise over the previous 3 frames that counts as an onset
ONSET_MIN_DB = -40.0
RHYTHM_MIN_ONSETS = 4
RHYTHM_IOI_TOLERANCE = 0.15  # successive inter-onset intervals within 15% of the run's median
RHYTHM_IOI_RANGE_S = (0.2, 2.0)  # 30-300 bpm
SMOOTH_FRAMES = 9  # ~0.3 s majority filter over frame classes
MIN_SPAN_S = 0.5
PITCH_RANGE_HZ = (60.0, 400.0)
VOICED_NCCF = 0.5
# Speech regions: pauses between sentences (<~1 s) stay inside one region, as a listener hears one narration.
VAD_THRESHOLD = 0.5
VAD_MIN_SPEECH_MS = 250
VAD_MIN_SILENCE_MS = 1000
VAD_PAD_MS = 200

SOUND_CLASSES = ("speech", "rhythm", "silence", "tone", "noise", "music", "sound")
CLASS_AXIS = {
    "speech": AudioAxis.narration,
    "silence": AudioAxis.environment,
    "noise": AudioAxis.environment,
    "music": AudioAxis.environment,
    "sound": AudioAxis.environment,
    "tone": AudioAxis.event,
    "rhythm": AudioAxis.event,
}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass
class Frames:
    """Per-frame measures; frame ``i`` covers samples ``[i*HOP, (i+1)*HOP)``."""

    rms_db: np.ndarray
    flatness: np.ndarray
    peakiness: np.ndarray
    peak_hz: np.ndarray
    centroid_hz: np.ndarray
    slope: np.ndarray  # log-power vs log-frequency: 0 white, -1 pink, -2 brown
    pitch_hz: np.ndarray  # 0 where unvoiced
    vad_prob: np.ndarray

    def __len__(self) -> int:
        return self.rms_db.shape[0]


def frame_count(num_samples: int) -> int:
    return int(np.ceil(num_samples / HOP))


def _framed(audio: np.ndarray) -> np.ndarray:
    n = frame_count(audio.shape[0])
    left = (N_FFT - HOP) // 2  # frame i is centred on the middle of its hop
    padded = np.pad(audio, (left, n * HOP + N_FFT - audio.shape[0] - left))
    return np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n]


def vad_probabilities(audio: np.ndarray) -> np.ndarray:
    """Silero speech probability per 512-sample window (faster-whisper's bundled ONNX model)."""
    from faster_whisper.vad import get_vad_model

    if audio.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    padded = np.pad(audio, (0, frame_count(audio.shape[0]) * HOP - audio.shape[0]))
    return np.asarray(get_vad_model()(padded), dtype=np.float32).reshape(-1)[: frame_count(audio.shape[0])]


def speech_regions(audio: np.ndarray) -> list[tuple[float, float]]:
    """Speech spans in seconds from Silero VAD (``faster_whisper.vad.get_speech_timestamps``)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if audio.shape[0] == 0:
        return []
    opts = VadOptions(threshold=VAD_THRESHOLD, min_speech_duration_ms=VAD_MIN_SPEECH_MS,
                      min_silence_duration_ms=VAD_MIN_SILENCE_MS, speech_pad_ms=VAD_PAD_MS)
    return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in get_speech_timestamps(audio, opts)]


def _pitch(frames: np.ndarray, loud: np.ndarray) -> np.ndarray:
    """Autocorrelation pitch of loud frames (normalised, 60-400 Hz); 0 for unvoiced or quiet frames."""
    pitch = np.zeros(frames.shape[0], dtype=np.float32)
    idx = np.flatnonzero(loud)
    if idx.size == 0:
        return pitch
    x = frames[idx] - frames[idx].mean(axis=1, keepdims=True)
    spec = np.fft.rfft(x, n=2 * N_FFT, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :N_FFT]
    # Unbiased normalisation: a lag-L product has N-L terms.
    ac = ac / (N_FFT - np.arange(N_FFT))[None, :]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    lo, hi = int(SAMPLE_RATE / PITCH_RANGE_HZ[1]), int(SAMPLE_RATE / PITCH_RANGE_HZ[0])
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(idx.size), lag]
    voiced = strength >= VOICED_NCCF
    pitch[idx[voiced]] = SAMPLE_RATE / lag[voiced]
    return pitch


def _spectral(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Loudness and spectral shape of a block of frames."""
    rms = np.sqrt(np.mean(frames[:, (N_FFT - HOP) // 2:(N_FFT + HOP) // 2] ** 2, axis=1))
    rms_db = 20 * np.log10(np.maximum(rms, 1e-6))
    power = np.abs(np.fft.rfft(frames * np.hanning(N_FFT).astype(np.float32)[None, :], axis=1)) ** 2
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    band = (freqs >= 50) & (freqs <= 7800)
    p = power[:, band] + 1e-12
    f = freqs[band]
    logp = np.log(p)
    peak = np.argmax(p, axis=1)
    near = [np.take_along_axis(p, np.clip(peak + d, 0, p.shape[1] - 1)[:, None], 1)[:, 0] for d in range(-2, 3)]
    # Parabolic interpolation of the log spectrum around the peak: the bins are 15.6 Hz apart, a pitch is finer.
    a, b, c = np.log(near[1]), np.log(near[2]), np.log(near[3])
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-9, 0.5 * (a - c) / np.where(np.abs(denom) > 1e-9, denom, 1.0), 0.0)
    peak_hz = f[peak] + np.clip(shift, -0.5, 0.5) * (f[1] - f[0])
    logf_c = np.log(f) - np.log(f).mean()
    return {
        "rms_db": rms_db,
        "flatness": np.exp(logp.mean(axis=1)) / p.mean(axis=1),
        "peakiness": sum(near) / p.sum(axis=1),
        "peak_hz": peak_hz,
        "centroid_hz": (p * f[None, :]).sum(axis=1) / p.sum(axis=1),
        "slope": ((logp - logp.mean(axis=1, keepdims=True)) * logf_c[None, :]).sum(axis=1) / (logf_c**2).sum(),
        "pitch_hz": _pitch(frames, rms_db > SILENCE_DB + 10),
    }


def measure(audio: np.ndarray) -> Frames:
    audio = np.asarray(audio, dtype=np.float32)
    frames = _framed(audio)
    # Blocks of frames keep the spectra of an hour of audio from needing gigabytes at once.
    blocks = [_spectral(frames[i:i + BLOCK_FRAMES]) for i in range(0, frames.shape[0], BLOCK_FRAMES)]
    joined = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    return Frames(**joined, vad_prob=vad_probabilities(audio))


def onsets(fr: Frames) -> np.ndarray:
    """Frame indices where loudness jumps by ONSET_RISE_DB over the quietest of the previous 3 frames."""
    db = fr.rms_db
    if db.shape[0] < 4:
        return np.zeros(0, dtype=int)
    before = np.minimum.reduce([np.roll(db, k) for k in (1, 2, 3)])
    before[:3] = db[0]
    rise = (db - before >= ONSET_RISE_DB) & (db >= ONSET_MIN_DB)
    # one onset per rise: the first frame of each run of rising frames
    return np.flatnonzero(rise & ~np.concatenate([[False], rise[:-1]]))


def percussive(fr: Frames, onset_frames: np.ndarray) -> np.ndarray:
    """The onsets whose loudness falls back soon after (beats, clicks), not those that start a steady sound."""
    db = fr.rms_db
    keep = [i for i in onset_frames
            if i + 3 < db.shape[0] and db[i:i + 2].max() - db[i + 2:i + 8].min() >= PERCUSSIVE_DECAY_DB]
    return np.asarray(keep, dtype=int)


def rhythm_runs(onset_frames: np.ndarray) -> list[tuple[int, int, float]]:
    """Runs of evenly spaced onsets: (first frame, end frame exclusive, median inter-onset interval in s)."""
    runs: list[tuple[int, int, float]] = []
    times = onset_frames * FRAME_S
    i = 0
    while i < len(times) - 1:
        j = i + 1
        iois = [times[j] - times[i]]
        while j + 1 < len(times):
            ioi = times[j + 1] - times[j]
            ref = float(np.median(iois))
            if abs(ioi - ref) > RHYTHM_IOI_TOLERANCE * ref:
                break
            iois.append(ioi)
            j += 1
        # The mean interval over the whole run: single intervals are quantised to whole 32 ms frames.
        ref = float(times[j] - times[i]) / (j - i)
        if j - i + 1 >= RHYTHM_MIN_ONSETS and RHYTHM_IOI_RANGE_S[0] <= ref <= RHYTHM_IOI_RANGE_S[1]:
            end = int(onset_frames[j] + round(ref / FRAME_S))
            runs.append((int(onset_frames[i]), end, ref))
            i = j
        else:
            i = j if j - i + 1 >= RHYTHM_MIN_ONSETS else i + 1  # an even run out of tempo range is not rescanned
    return runs


def classify(fr: Frames, speech: list[tuple[float, float]],
             rhythm: list[tuple[int, int, float]]) -> np.ndarray:
    """One sound-class index (into SOUND_CLASSES) per frame, smoothed."""
    n = len(fr)
    cls = np.full(n, SOUND_CLASSES.index("sound"), dtype=int)
    cls[fr.flatness < MUSIC_FLATNESS] = SOUND_CLASSES.index("music")
    cls[fr.flatness >= NOISE_FLATNESS] = SOUND_CLASSES.index("noise")
    cls[fr.peakiness >= TONE_PEAKINESS] = SOUND_CLASSES.index("tone")
    cls[fr.rms_db < SILENCE_DB] = SOUND_CLASSES.index("silence")
    for start, end, _ in rhythm:
        cls[start:min(end, n)] = SOUND_CLASSES.index("rhythm")
    for start_s, end_s in speech:
        cls[int(start_s / FRAME_S):int(np.ceil(end_s / FRAME_S))] = SOUND_CLASSES.index("speech")
    if n >= SMOOTH_FRAMES:
        cls = _majority(cls, SMOOTH_FRAMES)
    cls = _unstable_tones_to_music(fr, cls)
    return _absorb_short(cls, int(round(MIN_SPAN_S / FRAME_S)))


def _unstable_tones_to_music(fr: Frames, cls: np.ndarray) -> np.ndarray:
    """A run of single-peak frames whose peak wanders is a melody or a chirp, not a held tone."""
    tone, music = SOUND_CLASSES.index("tone"), SOUND_CLASSES.index("music")
    cls = cls.copy()
    for value, s, e in runs_of(cls):
        if value != tone:
            continue
        hz = fr.peak_hz[s:e][fr.rms_db[s:e] > SILENCE_DB]
        if hz.size == 0 or np.mean(np.abs(hz / np.median(hz) - 1) <= 0.03) < TONE_PITCH_STABILITY:
            cls[s:e] = music
    return cls


def _majority(cls: np.ndarray, width: int) -> np.ndarray:
    onehot = np.eye(len(SOUND_CLASSES))[cls]
    kernel = np.ones(width) / width
    votes = np.stack([np.convolve(onehot[:, k], kernel, mode="same") for k in range(len(SOUND_CLASSES))], axis=1)
    best = np.argmax(votes, axis=1)
    keep = votes[np.arange(cls.shape[0]), cls] >= votes[np.arange(cls.shape[0]), best]
    return np.where(keep, cls, best)  # ties keep the frame's own class


def runs_of(values: np.ndarray) -> list[tuple[int, int, int]]:
    """(value, start, end exclusive) for each run of equal values."""
    if values.shape[0] == 0:
        return []
    edges = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [values.shape[0]]])
    return [(int(values[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def _absorb_short(cls: np.ndarray, min_frames: int) -> np.ndarray:
    """Runs shorter than ``min_frames`` join their longer neighbour, shortest first (speech runs are kept: VAD
    already vetted them). Runs are a linked list and a heap, so an hour of frames takes one pass."""
    runs = [[v, s, e] for v, s, e in runs_of(cls)]
    if len(runs) < 2:
        return cls.copy()
    speech = SOUND_CLASSES.index("speech")
    prev = list(range(-1, len(runs) - 1))
    nxt = list(range(1, len(runs) + 1))
    nxt[-1] = -1
    alive = [True] * len(runs)
    heap = [(e - s, k) for k, (v, s, e) in enumerate(runs) if e - s < min_frames and v != speech]
    heapq.heapify(heap)

    def unlink(k: int) -> None:
        alive[k] = False
        if prev[k] >= 0:
            nxt[prev[k]] = nxt[k]
        if nxt[k] >= 0:
            prev[nxt[k]] = prev[k]

    while heap:
        length, k = heapq.heappop(heap)
        if not alive[k] or runs[k][2] - runs[k][1] != length:
            continue
        neighbours = [j for j in (prev[k], nxt[k]) if j >= 0]
        if not neighbours:
            break
        j = max(neighbours, key=lambda i: runs[i][2] - runs[i][1])
        runs[j][1], runs[j][2] = min(runs[j][1], runs[k][1]), max(runs[j][2], runs[k][2])
        unlink(k)
        for other in (prev[j], nxt[j]):  # the grown run may now touch a run of its own class
            if other >= 0 and runs[other][0] == runs[j][0]:
                runs[j][1], runs[j][2] = min(runs[j][1], runs[other][1]), max(runs[j][2], runs[other][2])
                unlink(other)
        if runs[j][2] - runs[j][1] < min_frames and runs[j][0] != speech:
            heapq.heappush(heap, (runs[j][2] - runs[j][1], j))
    out = np.empty_like(cls)
    for k, (v, s, e) in enumerate(runs):
        if alive[k]:
            out[s:e] = v
    return out


def note_name(hz: float) -> str:
    midi = int(round(69 + 12 * np.log2(hz / 440.0)))
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def _noise_colour(slope: float) -> str:
    if slope > -0.5:
        return "white"
    if slope > -1.5:
        return "pink"
    return "brown"


def _brightness(centroid_hz: float) -> str:
    if centroid_hz >= 2500:
        return "bright"
    if centroid_hz <= 1000:
        return "dark, warm"
    return "mellow"


def _register(pitch_hz: float) -> str:
    if pitch_hz < 165:
        return "low"
    if pitch_hz < 255:
        return "mid"
    return "high"


def _span(s: int, e: int, label: str, axis: AudioAxis, score: float, n_samples: int) -> Span:
    end_s = min(e * FRAME_S, n_samples / SAMPLE_RATE)
    return Span(round(s * FRAME_S, 3), round(end_s, 3), label, axis, float(np.clip(score, 0.0, 1.0)))


def _class_score(name: str, fr: Frames, s: int, e: int) -> float:
    sl = slice(s, e)
    if name == "speech":
        return float(np.mean(fr.vad_prob[sl]))
    if name == "silence":
        return float(np.mean(fr.rms_db[sl] < SILENCE_DB))
    if name == "tone":
        return float(np.mean(fr.peakiness[sl]))
    if name == "noise":
        return float(min(1.0, np.mean(fr.flatness[sl]) / 0.4))
    if name == "music":
        return float(np.mean(fr.flatness[sl] < NOISE_FLATNESS) * (1 - np.mean(fr.vad_prob[sl])))
    if name == "rhythm":
        return 0.9
    return 0.5


def _descriptors(name: str, fr: Frames, s: int, e: int, tempo_bpm: float | None, n: int) -> list[Span]:
    """Timbre, event and emotion descriptors for one sound-class run."""
    sl = slice(s, e)
    loud = fr.rms_db[sl] > SILENCE_DB
    out: list[Span] = []
    if name == "tone":
        hz = float(np.median(fr.peak_hz[sl][loud])) if loud.any() else 0.0
        if hz > 0:
            out.append(_span(s, e, f"pure tone near {hz:.0f} Hz ({note_name(hz)})", AudioAxis.timbre,
                             float(np.mean(fr.peakiness[sl])), n))
        out.append(_span(s, e, "calm, steady", AudioAxis.emotion, 0.5, n))
    elif name == "noise":
        slope = float(np.median(fr.slope[sl]))
        out.append(_span(s, e, f"{_noise_colour(slope)} noise, broadband hiss", AudioAxis.timbre,
                         min(1.0, float(np.mean(fr.flatness[sl])) / 0.4), n))
        out.append(_span(s, e, "tense, restless", AudioAxis.emotion, 0.4, n))
    elif name == "rhythm":
        hz = float(np.median(fr.peak_hz[sl][loud])) if loud.any() else 0.0
        if tempo_bpm:
            out.append(_span(s, e, f"regular beat at {tempo_bpm:.0f} bpm", AudioAxis.event, 0.9, n))
        if hz > 0:
            out.append(_span(s, e, f"short sharp clicks pitched near {hz:.0f} Hz", AudioAxis.timbre, 0.7, n))
        mood = "energetic, driving" if tempo_bpm and tempo_bpm >= 120 else "steady, measured"
        out.append(_span(s, e, mood, AudioAxis.emotion, 0.5, n))
    elif name == "speech":
        voiced = fr.pitch_hz[sl][fr.pitch_hz[sl] > 0]
        if voiced.size >= 10:
            med = float(np.median(voiced))
            semis = 12 * np.log2(voiced / med)
            spread = float(np.percentile(semis, 90) - np.percentile(semis, 10))
            out.append(_span(s, e, f"voice, {_register(med)} register, median pitch {med:.0f} Hz",
                             AudioAxis.timbre, min(1.0, voiced.size / max(1, e - s) * 2), n))
            mood = "animated, expressive" if spread >= 6 else ("even, composed" if spread >= 2.5 else "flat, monotone")
            out.append(_span(s, e, mood, AudioAxis.emotion, 0.5, n))
    elif name in ("music", "sound"):
        if loud.any():
            centroid = float(np.median(fr.centroid_hz[sl][loud]))
            what = "tonal, harmonically rich" if name == "music" else "mixed, textured"
            out.append(_span(s, e, f"{what}, {_brightness(centroid)} sound", AudioAxis.timbre, 0.5, n))
            level = float(np.percentile(fr.rms_db[sl][loud], 90))
            dynamics = float(np.percentile(fr.rms_db[sl][loud], 90) - np.percentile(fr.rms_db[sl][loud], 10))
            if level > -20 and dynamics > 15:
                mood = "dramatic, intense"
            elif level > -25:
                mood = "lively, bright" if centroid > 1500 else "full, warm"
            else:
                mood = "calm, gentle"
            out.append(_span(s, e, mood, AudioAxis.emotion, 0.4, n))
    elif name == "silence":
        out.append(_span(s, e, "still, hushed", AudioAxis.emotion, 0.4, n))
    return out


def _transients(fr: Frames, onset_frames: np.ndarray, cls: np.ndarray, n: int) -> list[Span]:
    """Isolated sudden loud sounds in music/noise/sound runs (rhythm onsets are the beat, speech onsets are words)."""
    keep = {SOUND_CLASSES.index(c) for c in ("music", "noise", "sound")}
    out = []
    for i in onset_frames:
        if cls[i] in keep and fr.rms_db[i] > -30:
            end = min(len(fr), i + int(round(0.25 / FRAME_S)))
            out.append(_span(int(i), end, "sudden loud sound", AudioAxis.event,
                             float(min(1.0, (fr.rms_db[i] + 40) / 40)), n))
    return out


def analyse(audio: np.ndarray) -> list[Span]:
    """Timed, scored sound classes and descriptors of a 16 kHz mono waveform, sorted by start time."""
    audio = np.asarray(audio, dtype=np.float32)
    n_samples = audio.shape[0]
    if n_samples < HOP:
        return []
    fr = measure(audio)
    onset_frames = onsets(fr)
    rhythm = rhythm_runs(percussive(fr, onset_frames))
    cls = classify(fr, speech_regions(audio), rhythm)
    spans: list[Span] = []
    for value, s, e in runs_of(cls):
        name = SOUND_CLASSES[value]
        tempo = None
        if name == "rhythm":
            iois = [ioi for rs, re_, ioi in rhythm if rs < e and re_ > s]
            tempo = 60.0 / float(np.median(iois)) if iois else None
        spans.append(_span(s, e, name, CLASS_AXIS[name], _class_score(name, fr, s, e), n_samples))
        spans.extend(_descriptors(name, fr, s, e, tempo, n_samples))
    spans.extend(_transients(fr, onset_frames, cls, n_samples))
    spans = [sp for sp in spans if sp.end_s > sp.start_s]
    return sorted(spans, key=lambda sp: (sp.start_s, sp.axis.value, sp.label))


@TAGGERS.register("signal-analysis")
class SignalTagger:
    """Silero VAD plus waveform measures; nothing to load but VAD. Its records say ``tagger="signal-analysis-v1"``."""

    name = TAGGER_NAME
    model_card = "Silero VAD (faster-whisper's ONNX) plus waveform measures; no trained sound classifier"
    vocabulary = staticmethod(lambda cfg: list(SOUND_CLASSES))  # the classes its spans are named by

    def __init__(self, cfg: AudioTagger | None = None):
        from faster_whisper.vad import get_vad_model

        get_vad_model()  # the ONNX session, cached for the process: loaded here, not on the first video

    def tag(self, audio: np.ndarray) -> list[Span]:
        return analyse(audio)
