"""The fault run's sources: short synthetic videos (ffmpeg lavfi) and the broken ones, each with what must happen.

A quarter of the sources are "broken" in one of nine ways, assigned round-robin so every kind appears even in a
short run. Some of them must still land, because the pipeline is designed to recover them:
- 429 then 200 (a transient fault: acquisition retries), no stated duration (the probe derives it from the
  packets, DESIGN "duration from streams when the container has none"), a title with ``../`` and shell
  metacharacters in the URL (both are data only: they never reach a path or a shell);
the rest must end in the dead-letter table with a reason of the expected class:
- HTTP 404, truncated files (three ways), not a video (three ways), no audio stream, a 3-hour stream (refused by
  the duration cap from the file's header, so the server must have sent only a small part of it).
Media files are written once into a cache folder and reused by later runs.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from devdata.samples import ESPEAK_VOICE, ESPEAK_WPM, INJECTION_SENTENCE

from .server import File, MediaServer, ShortBody, Status, Throttled

GENERATOR_VERSION = "v2"  # bump when the media change, so cached files are rewritten
LONG_VIDEO_S = 3 * 3600
MAX_DURATION_S = 3600.0  # the cap the fault run sets (the local-cpu profile allows 4 h)
# A refused 3-hour file may cost its header (the index of 3 hours of samples, ~1 MB) plus what the loopback socket
# buffers hold when the prober hangs up; anything near the file's size means it was downloaded.
MAX_REFUSED_FRACTION = 0.10

LAND, DEAD = "land", "dead"
# kind -> (expected outcome, dead-letter error classes that count as the right reason)
KINDS: dict[str, tuple[str, frozenset[str]]] = {
    "http_404": (DEAD, frozenset({"http_404"})),
    "http_429": (LAND, frozenset()),
    # The index cut off (not_media), frames missing behind a whole index (truncated), a transfer cut short
    # (yt-dlp gives up: DownloadError).
    "truncated": (DEAD, frozenset({"truncated", "not_media", "DownloadError"})),
    "not_video": (DEAD, frozenset({"unsupported_url", "not_media", "no_video_stream"})),
    "no_audio": (DEAD, frozenset({"no_audio_stream"})),
    "no_duration": (LAND, frozenset()),
    "too_long": (DEAD, frozenset({"too_long"})),
    "dotdot_title": (LAND, frozenset()),
    "shell_meta": (LAND, frozenset()),
}
PATTERNS = ("testsrc2", "smptebars", "rgbtestsrc", "yuvtestsrc", "pal75bars", "smptehdbars", "mandelbrot",
            "cellauto", "color=c=0x{hex}", "life")
COLOURS = ("1E3A8A", "7F1D1D", "065F46", "F59E0B", "9333EA", "0EA5E9", "E11D48", "84CC16")
TONES_HZ = (220, 262, 330, 392, 440, 523, 587, 660, 784, 880, 988, 1175)
W, H, FPS = 320, 180, 10


@dataclass
class Source:
    index: int
    kind: str  # "good" or one of KINDS
    variant: str
    path: str  # route path on the media server
    url: str = ""
    expect: str = LAND
    classes: frozenset[str] = field(default_factory=frozenset)
    injection: bool = False
    written: str = ""  # the path as the sources file writes it (default: ``path``)


def plan(n: int, marker_dir: Path) -> list[Source]:
    """``n`` sources: a quarter broken (at least one of each kind), the first good one narrating an injection."""
    broken = min(n - 1, max(len(KINDS), round(n / 4)))
    kinds = list(KINDS)
    out: list[Source] = []
    for i in range(n):
        if i < n - broken:
            out.append(Source(i, "good", "", f"/v/{i}/clip-{i}.mp4", injection=i == 0))
            continue
        kind = kinds[(i - (n - broken)) % len(kinds)]
        rank = (i - (n - broken)) // len(kinds)
        expect, classes = KINDS[kind]
        variant, path = "", f"/v/{i}/{kind}-{i}.mp4"
        if kind == "truncated":
            variant = ("cut_moov", "cut_faststart", "short_body")[rank % 3]
        elif kind == "not_video":
            variant = ("html", "random_bytes", "audio_only")[rank % 3]
            if variant == "html":
                path = f"/v/{i}/page-{i}.html"
        elif kind == "no_duration":
            path = f"/v/{i}/live-{i}.mkv"
        elif kind == "dotdot_title":
            # One path segment whose decoded form climbs out of any folder it is joined to: yt-dlp's title.
            path = f"/v/{i}/../../fault-escape-{i}.mp4"
            out.append(Source(i, kind, variant, path, expect=expect, classes=classes,
                              written=f"/v/{i}/..%2F..%2Ffault-escape-{i}.mp4"))
            continue
        elif kind == "shell_meta":
            marker = marker_dir / f"pwned-{i}"
            path = f"/v/{i}/$(touch {marker});`touch {marker}-b`|x&y'{i}.mp4"
        out.append(Source(i, kind, variant, path, expect=expect, classes=classes))
    return out


# ---------------------------------------------------------------- media files


def _ffmpeg(args: list[str]) -> None:
    proc = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr[-2000:]}")


def _pattern(index: int, scene: int) -> str:
    rng = random.Random(f"fault/{GENERATOR_VERSION}/{index}/{scene}")
    p = PATTERNS[(index * 3 + scene * 5) % len(PATTERNS)]
    size = f"s={W}x{H}:r={FPS}"
    if p.startswith("color"):
        return f"{p.format(hex=rng.choice(COLOURS))}:{size}"
    if p == "cellauto":
        return f"cellauto=rule={rng.choice((30, 90, 110, 150))}:seed={rng.randint(0, 9999)}:{size}"
    if p == "life":
        return f"life=seed={rng.randint(0, 9999)}:ratio=0.2:mold=5:{size}"
    return f"{p}={size}"


def _scenes(index: int, count: int | None = None) -> list[float]:
    """Scene lengths, each above the 2 s minimum clip: one scene for most videos, three for every fifth.

    Cut detection and the clip policy run on every video either way; the run's QA type (a cross-scene question,
    which needs two clips) applies to the fifth with cuts, and one clip is one fusion request: the LLM load on
    the CPU server is what sets the run's pace."""
    rng = random.Random(f"fault/{GENERATOR_VERSION}/{index}/scenes")
    count = count or (3 if index % 5 == 4 else 1)
    return [round(rng.uniform(2.5, 3.5), 1) for _ in range(count)]


def good_video(path: Path, index: int, *, audio: bool = True, faststart: bool = True,
               narration: Path | None = None, scenes: int | None = None) -> None:
    """``scenes``: how many (default: ``_scenes``' choice for ``index``)."""
    scenes = _scenes(index, scenes)
    args: list[str] = []
    for j, d in enumerate(scenes):
        args += ["-f", "lavfi", "-t", str(d), "-i", _pattern(index, j)]
    graph = [f"[{j}:v]format=yuv420p,setsar=1[v{j}]" for j in range(len(scenes))]
    graph.append("".join(f"[v{j}]" for j in range(len(scenes))) + f"concat=n={len(scenes)}:v=1:a=0[v]")
    maps = ["-map", "[v]"]
    if audio:
        rng = random.Random(f"fault/{GENERATOR_VERSION}/{index}/audio")
        n = len(scenes)
        for d in scenes:
            if rng.random() < 0.3:
                src = f"anoisesrc=r=16000:a=0.15:c={rng.choice(('white', 'pink'))}:seed={rng.randint(0, 9999)}"
            else:
                src = f"sine=f={rng.choice(TONES_HZ)}:r=16000"
            args += ["-f", "lavfi", "-t", str(d), "-i", src]
        graph.append("".join(f"[{n + j}:a]" for j in range(n)) + f"concat=n={n}:v=0:a=1[bed]")
        if narration is not None:
            args += ["-i", str(narration)]
            graph.append(f"[{2 * n}:a]aresample=16000,adelay=300|300[voice];"
                         "[bed]volume=0.15[quiet];[quiet][voice]amix=inputs=2:duration=first:normalize=0[a]")
        else:
            graph.append("[bed]anull[a]")
        maps += ["-map", "[a]", "-c:a", "aac", "-b:a", "64k", "-ac", "1"]
    args += ["-filter_complex", ";".join(graph), *maps, "-c:v", "libx264", "-preset", "ultrafast", "-crf", "30"]
    if faststart:
        args += ["-movflags", "+faststart"]
    args += ["-f", "mp4", str(path)]
    _ffmpeg(args)


def _narration(path: Path) -> None:
    subprocess.run(["espeak-ng", "-v", ESPEAK_VOICE, "-s", str(ESPEAK_WPM), "-w", str(path), INJECTION_SENTENCE],
                   check=True, capture_output=True, timeout=120)


def long_video(path: Path, work: Path) -> None:
    """A 3-hour faststart mp4 (duration in its header): one minute encoded, then copied 180 times."""
    minute = work / "minute.mp4"
    _ffmpeg(["-f", "lavfi", "-t", "60", "-i", "testsrc2=s=160x90:r=5", "-f", "lavfi", "-t", "60", "-i",
             "anoisesrc=r=22050:a=0.1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "64k",
             str(minute)])
    listing = work / "list.txt"
    listing.write_text("".join(f"file '{minute}'\n" for _ in range(LONG_VIDEO_S // 60)))
    _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", "-movflags", "+faststart", str(path)])


def _atomic(path: Path, make) -> Path:
    """``make(tmp)`` then rename: a file in the cache is always whole (a killed harness leaves no half file)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    make(tmp)
    os.replace(tmp, path)
    return path


def _cut(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def build_media(sources: list[Source], cache: Path) -> dict[int, Path]:
    """Every file the sources need, in ``cache`` (made once); returns the file per source index."""
    cache = cache / GENERATOR_VERSION
    cache.mkdir(parents=True, exist_ok=True)
    files: dict[int, Path] = {}
    with tempfile.TemporaryDirectory(prefix="fault-media-") as tmp:
        work = Path(tmp)
        for s in sources:
            i = s.index
            good = cache / f"good-{i}.mp4"
            if s.kind == "good" and s.injection:
                voice = work / "voice.wav"
                _narration(voice)
                files[i] = _atomic(cache / f"injection-{i}.mp4",
                                   lambda p, i=i, voice=voice: good_video(p, i, narration=voice, scenes=3))
            elif s.kind in ("good", "http_429", "dotdot_title", "shell_meta") or s.variant == "short_body":
                files[i] = _atomic(good, lambda p, i=i: good_video(p, i))
            elif s.kind == "no_audio":
                files[i] = _atomic(cache / f"silent-{i}.mp4", lambda p, i=i: good_video(p, i, audio=False))
            elif s.kind == "no_duration":
                def live(p: Path, i=i) -> None:
                    whole = work / f"live-src-{i}.mp4"
                    good_video(whole, i)
                    # Matroska written to a pipe cannot seek back to write its duration: the file states none.
                    with open(p, "wb") as out:
                        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(whole), "-c", "copy", "-f",
                                        "matroska", "pipe:1"], stdout=out, check=True, timeout=120)
                files[i] = _atomic(cache / f"live-{i}.mkv", live)
            elif s.variant == "cut_moov":
                def cut_moov(p: Path, i=i) -> None:
                    whole = work / f"moov-end-{i}.mp4"
                    good_video(whole, i, faststart=False, scenes=2)  # index at the end: a cut file has none
                    _cut(whole, p, 0.5)
                files[i] = _atomic(cache / f"cut-moov-{i}.mp4", cut_moov)
            elif s.variant == "cut_faststart":
                def cut_fast(p: Path, i=i) -> None:
                    whole = work / f"fast-{i}.mp4"
                    good_video(whole, i, scenes=2)  # index first: the header promises frames the file lacks
                    _cut(whole, p, 0.5)
                files[i] = _atomic(cache / f"cut-fast-{i}.mp4", cut_fast)
            elif s.variant == "random_bytes":
                files[i] = _atomic(cache / f"random-{i}.mp4",
                                   lambda p, i=i: p.write_bytes(random.Random(i).randbytes(200_000)))
            elif s.variant == "audio_only":
                files[i] = _atomic(cache / f"audio-only-{i}.mp4", lambda p: _ffmpeg(
                    ["-f", "lavfi", "-t", "4", "-i", "sine=f=440:r=16000", "-c:a", "aac", "-f", "mp4", str(p)]))
            elif s.variant == "html":
                files[i] = _atomic(cache / f"page-{i}.html", lambda p, i=i: p.write_text(
                    f"<!doctype html><html><head><title>Not a video {i}</title></head>"
                    "<body><p>Nothing to see here.</p></body></html>"))
            elif s.kind == "too_long":
                files[i] = _atomic(cache / "three-hours.mp4", lambda p: long_video(p, work))
    return files


def serve(sources: list[Source], files: dict[int, Path], server: MediaServer) -> None:
    """Register one route per source and set its URL."""
    for s in sources:
        f = files.get(s.index)
        if s.kind == "http_404":
            route = Status(404)
        elif s.variant == "html":
            route = File(f, "text/html; charset=utf-8")
        elif s.kind == "no_duration":
            route = File(f, "video/x-matroska")
        elif s.kind == "http_429":
            route = Throttled(File(f), times=1 + s.index % 2)
        elif s.variant == "short_body":
            route = ShortBody(File(f), fraction=0.5)
        else:
            route = File(f)
        server.add(s.path, route)
        s.url = server.url(s.written or s.path)
