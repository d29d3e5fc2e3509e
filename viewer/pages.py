"""The viewer's pages: the index of videos and a page per video (player, tracks, clip cards, transcript, QA, dead
letters), and ``write_viewer`` that writes the site."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from schemas.records import LETTERS
from schemas.shards import DEAD_LETTER_TABLE
from schemas.store import DatasetLike
from viewer.data import Dataset, clips_of, first_keyframe, href_to, inside, keyframes, load
from viewer.html import (SEEK_SCRIPT, VIDEO_DIR, clip_anchor, clock, counts_list, dead_letter_table, esc, num, page,
                         qa_anchor, safe_name, span, video_page_href)

VIEW_DIR = "_view"  # default output inside the dataset; "_" names are no table, so the manifest ignores it

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


