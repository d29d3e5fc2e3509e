"""`saven view DATASET`: a static HTML site for reading a dataset the way a researcher would.

``index.html`` lists the videos with dataset-level counts; ``videos/<video_id>.html`` shows one video: its player,
the clip timeline (keyframes, keyframe captions, fused descriptions), the transcript, the audio events as a track,
every QA item with its correct option marked, and the video's dead letters. Other reports link to a QA item with
``video_page_href(video_id, qa_id)``.

Everything that comes from the data (titles, transcripts, captions, questions, dead-letter messages) is text: it is
escaped on the way into the page, and only numbers we format and names made from sanitised ids go into attributes.
The pages carry one inline script, written here, allowed by its hash in a Content-Security-Policy; nothing is
fetched from anywhere but the viewer's and the dataset's own files, so the site works from ``file://`` and offline.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from schemas.paths import keyframe_path
from schemas.records import LETTERS
from schemas.shards import DEAD_LETTER_TABLE, read_table
from schemas.store import DatasetLike, DatasetStore, StoreError

VIEW_DIR = "_view"  # default output inside the dataset; "_" names are no table, so the manifest ignores it
VIDEO_DIR = "videos"
PER_VIDEO_TABLES = ("clips", "speech", "audio_events", "audio_captions", "visual_captions", "descriptions", "qa",
                    DEAD_LETTER_TABLE)

# The only script of the site. Event delegation: one listener serves every element with a data-t time, so the data
# never has to be put into a script.
SEEK_SCRIPT = """
document.addEventListener('click', function (event) {
  var el = event.target.closest('[data-t]');
  var video = document.getElementById('player');
  if (!el || !video) return;
  video.currentTime = parseFloat(el.getAttribute('data-t'));
  var playing = video.play();
  if (playing) playing.catch(function () {});
});
"""

CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330;background:#f5f6f8}
a{color:#1f5fbf;text-decoration:none}a:hover{text-decoration:underline}
header.top{padding:14px 24px;background:#1d2330;color:#fff}header.top a{color:#9cc3ff}
header.top h1{margin:4px 0;font-size:20px;overflow-wrap:anywhere}
.meta{color:#6a7280;font-size:12px}header.top .meta{color:#b9c0cc}
main{padding:16px 24px}
h2{font-size:16px;margin:18px 0 8px}
.counts{display:flex;flex-wrap:wrap;gap:8px;margin:0;padding:0;list-style:none}
.counts li{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:6px 12px}
.counts b{display:block;font-size:18px}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border-bottom:1px solid #e6e9ee;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img.thumb{width:120px;height:68px;object-fit:cover;border-radius:4px;background:#ccd}
.layout{display:grid;grid-template-columns:minmax(360px,46%) 1fr;gap:20px;align-items:start}
.stage{position:sticky;top:0;padding-top:8px}.details{min-width:0;overflow-wrap:anywhere}
table.videos{width:auto;min-width:50%}
@media (max-width:900px){.layout{grid-template-columns:1fr}.stage{position:static}}
video{width:100%;max-height:52vh;background:#000;border-radius:6px}
.track{position:relative;height:30px;background:#fff;border:1px solid #dde1e7;border-radius:4px;margin:3px 0;
  overflow:hidden}
.track-name{font-size:11px;color:#6a7280;margin-top:6px}
.seg{position:absolute;top:2px;bottom:2px;border-radius:3px;font-size:10px;line-height:26px;padding:0 3px;
  overflow:hidden;white-space:nowrap;cursor:pointer;background:#cfe0ff;border:1px solid #8fb2ee}
.seg.clipseg{background:#2b3445;border-color:#111;color:#fff}
.seg.clipseg img{height:100%;opacity:.85;vertical-align:top;margin-right:3px}
.seg.speech{background:#d8f0d9;border-color:#7cc181}
.seg.axis-environment{background:#e3dcff;border-color:#a895ee}
.seg.axis-timbre{background:#ffe6c7;border-color:#e8ae63}
.seg.axis-event{background:#ffd3d3;border-color:#e08080}
.seg.axis-emotion{background:#d3f3f5;border-color:#6cc3c9}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 12px;margin:8px 0}
.clip{cursor:pointer}.clip:hover{border-color:#8fb2ee}
.clip h3,.qa h3{margin:0 0 6px;font-size:14px}
.frames{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0}
.frames figure{margin:0;width:200px;font-size:12px}
.frames img{width:200px;height:112px;object-fit:cover;border-radius:4px;background:#ccd}
.fused{font-weight:500}
dl.axes{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:6px 0 0;font-size:12px}
dl.axes dt{color:#6a7280}dl.axes dd{margin:0}
button.t{font:inherit;font-size:12px;font-variant-numeric:tabular-nums;border:1px solid #b8c2d3;border-radius:4px;
  background:#eef3fb;cursor:pointer;padding:0 6px}
ol.transcript{list-style:none;padding:0;margin:0}ol.transcript li{padding:3px 0;border-bottom:1px solid #eef0f3}
.tag{display:inline-block;font-size:11px;background:#eef1f5;border-radius:3px;padding:0 6px;margin-right:4px}
ol.options{list-style:none;padding:0;margin:6px 0}
ol.options li{padding:3px 8px;border-radius:4px;margin:2px 0}
ol.options li.correct{background:#dff3e0;font-weight:600}
.letter{display:inline-block;width:1.6em;color:#6a7280}
.checks{font-size:11px;color:#2d7a34}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:11px;background:#f3f4f6;padding:6px;margin:4px 0}
.empty{color:#6a7280;font-style:italic}
"""


# --- text and numbers into HTML ------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Data as HTML text (also safe inside a quoted attribute)."""
    return html.escape("" if value is None else str(value), quote=True)


def safe_name(identifier: str) -> str:
    """An id as a file name or HTML id: only [A-Za-z0-9._-], never hidden or relative."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", identifier)
    return f"_{name}" if name.startswith(".") or not name else name


def num(seconds: Any) -> str:
    """A time for a data-t attribute: a formatted float, nothing else."""
    value = float(seconds)
    return f"{value:.3f}" if math.isfinite(value) else "0.000"


def clock(seconds: float | None) -> str:
    """m:ss.s (h:mm:ss.s past an hour), for reading."""
    if seconds is None:
        return "–"
    tenths = int(round(float(seconds) * 10))
    h, rem = divmod(tenths, 36000)
    m, rem = divmod(rem, 600)
    return f"{h}:{m:02d}:{rem / 10:04.1f}" if h else f"{m}:{rem / 10:04.1f}"


def span(start: float | None, end: float | None) -> str:
    return clock(start) if end is None else f"{clock(start)}–{clock(end)}"


def video_page_href(video_id: str, qa_id: str | None = None) -> str:
    """The href of a video page (of one QA item on it) relative to the viewer's folder, where index.html is."""
    href = f"{VIDEO_DIR}/{safe_name(video_id)}.html"
    return f"{href}#{qa_anchor(qa_id)}" if qa_id else href


def qa_anchor(qa_id: str) -> str:
    return f"qa-{safe_name(qa_id)}"


def clip_anchor(clip_id: str) -> str:
    return f"clip-{safe_name(clip_id)}"


# --- the data ------------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    root: Path
    videos: list[dict[str, Any]]
    rows: dict[str, dict[str | None, list[dict[str, Any]]]]  # table -> video_id -> rows

    def of(self, table: str, video_id: str) -> list[dict[str, Any]]:
        return self.rows[table].get(video_id, [])

    def total(self, table: str) -> int:
        return sum(len(v) for v in self.rows[table].values())

    def orphan_dead_letters(self) -> list[dict[str, Any]]:
        """Failures of sources that never became a video of the dataset (e.g. an audio-only file)."""
        known = {v["video_id"] for v in self.videos}
        return [d for vid, ds in self.rows[DEAD_LETTER_TABLE].items() if vid not in known for d in ds]


def load(dataset: DatasetLike) -> Dataset:
    """Every table a page shows, grouped by video; through the shard reader, so compacted datasets read too."""
    store = DatasetStore.of(dataset)
    if not store.local:
        # The pages play the media and show the keyframes from files beside them; an object store has none here.
        raise StoreError(f"{store.uri}: the viewer needs a local dataset folder (copy the dataset down first)")
    rows: dict[str, dict[str | None, list[dict[str, Any]]]] = {}
    for table in PER_VIDEO_TABLES:
        grouped: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for row in read_table(store, table).to_pylist():
            grouped[row.get("video_id")].append(row)
        rows[table] = grouped
    videos = sorted(read_table(store, "videos").to_pylist(), key=lambda v: v["video_id"])
    return Dataset(store.local_path(), videos, rows)


def inside(root: Path, rel: str | os.PathLike) -> Path | None:
    """``root/rel`` if it is an existing file inside ``root``: a recorded path never points a page elsewhere."""
    path = (root / rel).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


def href_to(target: Path, page_dir: Path) -> str:
    """A relative, URL-quoted href from a page's folder to a file (works from file:// and from a server)."""
    return quote(Path(os.path.relpath(target, page_dir)).as_posix())


def keyframes(ds: Dataset, clip: dict[str, Any]) -> list[tuple[float, Path]]:
    """(time, file) of a clip's keyframes that exist, in order."""
    out = []
    for k, t in enumerate(clip["keyframe_times"] or []):
        path = keyframe_path(ds.root, clip["video_id"], clip["clip_id"], k)
        if inside(ds.root, path):
            out.append((t, path))
    return out


def clips_of(ds: Dataset, video_id: str) -> list[dict[str, Any]]:
    return sorted(ds.of("clips", video_id), key=lambda c: c["index"])


def first_keyframe(ds: Dataset, video_id: str) -> Path | None:
    """The video's thumbnail: its first keyframe image."""
    return next((path for c in clips_of(ds, video_id) for _, path in keyframes(ds, c)), None)


# --- pages ---------------------------------------------------------------------------------------------------


def csp(script: str | None) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() if script else None
    scripts = f"'sha256-{digest}'" if digest else "'none'"
    # Inline <style> and the style="left:..%" of track segments need 'unsafe-inline' for styles; they only ever
    # hold our CSS and numbers.
    return (f"default-src 'self'; script-src {scripts}; style-src 'unsafe-inline'; img-src 'self' data:; "
            "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'")


def page(title: str, header: str, body: str, script: str | None = None) -> str:
    script_tag = f"<script>{script}</script>" if script else ""
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp(script)}\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style></head>\n"
            f"<body><header class=\"top\">{header}</header>\n<main>{body}</main>\n{script_tag}</body></html>\n")


def counts_list(items: Iterable[tuple[str, int]]) -> str:
    return "<ul class=\"counts\">" + "".join(f"<li><b>{n}</b>{esc(label)}</li>" for label, n in items) + "</ul>"


def dead_letter_table(letters: list[dict[str, Any]], with_source: bool = False) -> str:
    if not letters:
        return "<p class=\"empty\">No failures.</p>"
    head = "<th>source</th>" if with_source else ""
    rows = []
    for d in sorted(letters, key=lambda d: (d["stage"], d["error_class"], d.get("item_id") or "")):
        source = f"<td>{esc(d.get('source_id'))}</td>" if with_source else ""
        detail = f"<details><summary>detail</summary><pre>{esc(d['detail'])}</pre></details>" if d.get("detail") else ""
        rows.append(f"<tr class=\"dead-letter\">{source}<td>{esc(d['stage'])}</td><td>{esc(d['error_class'])}</td>"
                    f"<td>{esc(d.get('item_id'))}</td><td class=\"message\">{esc(d['message'])}{detail}</td>"
                    f"<td class=\"num\">{esc(d.get('attempts'))}</td></tr>")
    return (f"<table class=\"dead-letters\"><tr>{head}<th>stage</th><th>error class</th><th>item</th><th>message</th>"
            f"<th>attempts</th></tr>{''.join(rows)}</table>")


def index_page(ds: Dataset, out: Path) -> str:
    by_stage: dict[str, int] = defaultdict(int)
    for letters in ds.rows[DEAD_LETTER_TABLE].values():
        for d in letters:
            by_stage[d["stage"]] += 1
    counts = counts_list([("videos", len(ds.videos)), ("clips", ds.total("clips")), ("QA items", ds.total("qa")),
                          ("transcript segments", ds.total("speech")), ("audio events", ds.total("audio_events")),
                          ("keyframe captions", ds.total("visual_captions")),
                          ("dead letters", ds.total(DEAD_LETTER_TABLE))])
    stages = ", ".join(f"{esc(s)}: {n}" for s, n in sorted(by_stage.items()))
    rows = []
    for v in ds.videos:
        vid = v["video_id"]
        clips = clips_of(ds, vid)
        first = first_keyframe(ds, vid)
        thumb = f"<img class=\"thumb\" src=\"{href_to(first, out)}\" alt=\"\" loading=\"lazy\">" if first else ""
        link = esc(video_page_href(vid))
        rows.append(f"<tr class=\"video\"><td><a href=\"{link}\">{thumb}</a></td>"
                    f"<td><a href=\"{link}\">{esc(v.get('title') or vid)}</a><div class=\"meta\">{esc(vid)}</div></td>"
                    f"<td class=\"num\">{clock(v['duration_s'])}</td><td class=\"num\">{len(clips)}</td>"
                    f"<td class=\"num\">{len(ds.of('qa', vid))}</td>"
                    f"<td class=\"num\">{len(ds.of(DEAD_LETTER_TABLE, vid))}</td></tr>")
    table = ("<table class=\"videos\"><tr><th></th><th>title</th><th>duration</th><th>clips</th><th>QA</th>"
             f"<th>failures</th></tr>{''.join(rows)}</table>") if rows else "<p class=\"empty\">No videos.</p>"
    orphans = ds.orphan_dead_letters()
    body = (f"{counts}<p class=\"meta\">dead letters by stage: {stages or 'none'}</p>\n<h2>Videos</h2>{table}\n"
            f"<h2>Sources that did not become videos</h2>{dead_letter_table(orphans, with_source=True)}")
    header = f"<div class=\"meta\">SAVEn-Vid dataset</div><h1>{esc(ds.root.name)}</h1>"
    return page(f"SAVEn-Vid dataset {ds.root.name}", header, body)


def track(name: str, segments: list[str]) -> str:
    return f"<div class=\"track-name\">{esc(name)}</div><div class=\"track\">{''.join(segments)}</div>"


def segment(start: float, end: float, duration: float, label: str, cls: str, inner: str | None = None) -> str:
    """A time-positioned, clickable block of a track: left and width in % of the video's duration."""
    left = min(max(start / duration * 100, 0.0), 100.0)
    width = min(max((end - start) / duration * 100, 0.4), 100.0 - left)
    return (f"<div class=\"seg {cls}\" style=\"left:{left:.3f}%;width:{width:.3f}%\" data-t=\"{num(start)}\" "
            f"title=\"{esc(span(start, end))} {esc(label)}\">{inner if inner is not None else esc(label)}</div>")


def tracks(ds: Dataset, vid: str, duration: float, page_dir: Path) -> str:
    clips = clips_of(ds, vid)
    clip_segs = []
    for c in clips:
        kfs = keyframes(ds, c)
        img = f"<img src=\"{href_to(kfs[0][1], page_dir)}\" alt=\"\">" if kfs else ""
        clip_segs.append(segment(c["start_s"], c["end_s"], duration, f"clip {c['index']}", "clipseg",
                                 f"{img}{c['index']}"))
    out = [track("clips", clip_segs),
           track("speech", [segment(s["start_s"], s["end_s"], duration, s["text"], "speech")
                            for s in ds.of("speech", vid)])]
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in ds.of("audio_events", vid):
        events[e["axis"]].append(e)
    # One row per axis: events of one axis rarely overlap, those of different axes often do.
    for axis in sorted(events):
        out.append(track(f"audio events: {axis}", [
            segment(e["start_s"], e["end_s"], duration, e["label"], f"audio-event axis-{safe_name(axis)}")
            for e in sorted(events[axis], key=lambda e: e["start_s"])]))
    return "".join(out)


def clip_card(ds: Dataset, clip: dict[str, Any], page_dir: Path) -> str:
    vid, cid = clip["video_id"], clip["clip_id"]
    captions = sorted((c for c in ds.of("visual_captions", vid) if c["clip_id"] == cid), key=lambda c: c["t"])
    figures, shown = [], set()
    for t, path in keyframes(ds, clip):
        near = [i for i, c in enumerate(captions) if abs(c["t"] - t) < 0.05]
        shown.update(near)
        text = "".join(f"<div class=\"caption\">{esc(captions[i]['text'])}</div>" for i in near)
        figures.append(f"<figure data-t=\"{num(t)}\"><img src=\"{href_to(path, page_dir)}\" alt=\"keyframe at "
                       f"{clock(t)}\" loading=\"lazy\"><figcaption><span class=\"meta\">{clock(t)}</span>{text}"
                       "</figcaption></figure>")
    # Captions whose keyframe image is missing are still data worth reading.
    rest = "".join(f"<div class=\"caption\"><span class=\"meta\">{clock(c['t'])}</span> {esc(c['text'])}</div>"
                   for i, c in enumerate(captions) if i not in shown)
    desc = next((d for d in ds.of("descriptions", vid) if d["clip_id"] == cid), None)
    audio = next((a for a in ds.of("audio_captions", vid) if a["clip_id"] == cid), None)
    fused = f"<p class=\"fused\">{esc(desc['fused'])}</p>" if desc else "<p class=\"empty\">No fused description.</p>"
    # The fused sentence is what the QA was written from; the per-axis inputs beside it show where it came from.
    axes = [("visual", desc["visual"] if desc else "")]
    if desc or audio:
        axes += [(k, (desc or audio)[k]) for k in ("narration", "environment", "timbre", "event", "emotion")]
    if audio:
        axes.append(("audio caption", audio["sentence"]))
    dl = "<dl class=\"axes\">" + "".join(f"<dt>{k}</dt><dd>{esc(v)}</dd>" for k, v in axes if v) + "</dl>"
    return (f"<section class=\"card clip\" id=\"{clip_anchor(cid)}\" data-t=\"{num(clip['start_s'])}\">"
            f"<h3>Clip {clip['index']} <span class=\"meta\">{span(clip['start_s'], clip['end_s'])}</span></h3>"
            f"<div class=\"frames\">{''.join(figures)}</div>{rest}{fused}{dl}</section>")


def qa_card(item: dict[str, Any]) -> str:
    when = "whole video" if item["start_s"] is None else (
        f"<button class=\"t\" data-t=\"{num(item['start_s'])}\">{span(item['start_s'], item['end_s'])}</button>")
    options = "".join(
        f"<li class=\"option{' correct' if k == item['answer_index'] else ''}\"><span class=\"letter\">{LETTERS[k]}"
        f"</span>{esc(o)}{' ✓' if k == item['answer_index'] else ''}</li>" for k, o in enumerate(item["options"]))
    evidence = ", ".join(f"<a href=\"#{clip_anchor(c)}\">{esc(c.rsplit('.', 1)[-1])}</a>"
                         for c in item["evidence_clip_ids"])
    checks = "".join(f"<li>{esc(c)}</li>" for c in item["checks_passed"] or [])
    anchor = qa_anchor(item["qa_id"])
    return (f"<article class=\"card qa\" id=\"{anchor}\"><h3><span class=\"tag type\">{esc(item['type'])}</span>"
            f"<span class=\"tag\">{esc(item['kind'])}</span> {when} <a class=\"meta\" href=\"#{anchor}\">"
            f"{esc(item['qa_id'])}</a></h3><p class=\"question\">{esc(item['question'])}</p>"
            f"<ol class=\"options\">{options}</ol><div class=\"meta\">evidence: {evidence} · generator: "
            f"{esc(item['generator_model'])}</div><details class=\"checks\"><summary>"
            f"{len(item['checks_passed'] or [])} checks passed</summary><ul>{checks}</ul></details></article>")


def video_page(ds: Dataset, video: dict[str, Any], out: Path) -> str:
    vid, page_dir = video["video_id"], out / VIDEO_DIR
    duration = float(video["duration_s"])
    media = inside(ds.root, video["media_path"])
    clips = clips_of(ds, vid)
    first = first_keyframe(ds, vid)
    poster = f" poster=\"{href_to(first, page_dir)}\"" if first else ""
    player = (f"<video id=\"player\" controls preload=\"metadata\"{poster} src=\"{href_to(media, page_dir)}\">"
              "</video>" if media else "<p class=\"empty\">The media file is not in the dataset folder.</p>")
    speech = sorted(ds.of("speech", vid), key=lambda s: s["start_s"])
    transcript = "".join(f"<li class=\"speech-line\"><button class=\"t\" data-t=\"{num(s['start_s'])}\">"
                         f"{span(s['start_s'], s['end_s'])}</button> {esc(s['text'])}</li>" for s in speech)
    qa = sorted(ds.of("qa", vid), key=lambda q: (q["type"], q["start_s"] or 0.0, q["qa_id"]))
    letters = ds.of(DEAD_LETTER_TABLE, vid)
    header = (f"<a href=\"../index.html\">← all videos</a><h1>{esc(video.get('title') or vid)}</h1>"
              f"<div class=\"meta\">{esc(vid)} · {clock(duration)} · {video['width']}×{video['height']} · "
              f"{video['fps']:.3g} fps · source {esc(video['source'])}"
              f"{' · licence ' + esc(video['license']) if video.get('license') else ''}</div>")
    counts = counts_list([("clips", len(clips)), ("QA items", len(qa)), ("transcript segments", len(speech)),
                          ("audio events", len(ds.of("audio_events", vid))), ("failures", len(letters))])
    sections = [
        ("Clips", "".join(clip_card(ds, c, page_dir) for c in clips), "No clips."),
        ("Transcript", f"<ol class=\"transcript\">{transcript}</ol>" if transcript else "", "No speech."),
        ("QA items", "".join(qa_card(q) for q in qa), "No QA items."),
        ("Failures", dead_letter_table(letters), ""),
    ]
    details = "".join(f"<h2>{title}</h2>{html_ or f'<p class=empty>{empty}</p>'}" for title, html_, empty in sections)
    body = (f"<div class=\"layout\"><div class=\"stage\">{player}{tracks(ds, vid, duration, page_dir)}</div>"
            f"<div class=\"details\">{counts}{details}</div></div>")
    return page(f"{video.get('title') or vid} · SAVEn-Vid", header, body, SEEK_SCRIPT)


# --- the site ------------------------------------------------------------------------------------------------


def write_viewer(dataset: DatasetLike, out: Path | None = None) -> Path:
    """Write the site for a local dataset folder (default: ``<dataset>/_view``); returns the path of index.html."""
    ds = load(dataset)
    out = Path(out or ds.root / VIEW_DIR).resolve()
    pages = out / VIDEO_DIR
    pages.mkdir(parents=True, exist_ok=True)
    for old in pages.glob("*.html"):  # pages of videos no longer in the dataset
        old.unlink()
    for video in ds.videos:
        (pages / f"{safe_name(video['video_id'])}.html").write_text(video_page(ds, video, out), encoding="utf-8")
    index = out / "index.html"
    index.write_text(index_page(ds, out), encoding="utf-8")
    return index


class _FileSlice:
    """The bytes of one range of a file, for ``copyfile``: a Range request must not send the whole file."""

    def __init__(self, f, length: int):
        self.f, self.left = f, length

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


class _Handler(SimpleHTTPRequestHandler):
    """Serves the viewer and the dataset only (nothing else under their common folder), with byte ranges: the
    browser seeks in a video by asking for a range, which ``http.server`` alone does not answer."""

    allowed: tuple[Path, ...] = ()

    def translate_path(self, path: str) -> str:
        local = Path(os.path.normpath(super().translate_path(path)))
        if any(local == a or local.is_relative_to(a) for a in self.allowed):
            return str(local)
        return str(Path(self.directory) / ".not-served" / "404")

    def send_head(self):
        path = self.translate_path(self.path)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if not m or m.groups() == ("", "") or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        first, last = m.groups()
        start, end = (max(size - int(last), 0), size - 1) if first == "" else (
            int(first), min(int(last) if last else size - 1, size - 1))
        if start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return _FileSlice(f, end - start + 1)


def make_server(index: Path, dataset: DatasetLike, port: int = 8000) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server for the site on 127.0.0.1 only (the data is not for the network); returns it and the URL of
    index.html. Call ``serve_forever()`` on it."""
    site = Path(index).resolve().parent
    data = DatasetStore.of(dataset).local_path().resolve()
    root = Path(os.path.commonpath([site, data]))
    handler = type("ViewerHandler", (_Handler,), {"allowed": (site, data)})
    server = ThreadingHTTPServer(("127.0.0.1", port),
                                 lambda *a, **kw: handler(*a, directory=str(root), **kw))
    url = f"http://127.0.0.1:{server.server_address[1]}/{quote(Path(index).resolve().relative_to(root).as_posix())}"
    return server, url
