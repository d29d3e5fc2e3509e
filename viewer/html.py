"""Text into HTML for the viewer's pages (and the AVBench report's links): every value from the data is escaped
text; only numbers formatted here and names made from sanitised ids go into attributes; the one inline script is
allowed by its hash in a Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
from typing import Any, Iterable

VIDEO_DIR = "videos"  # the video pages' folder inside the site
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


