"""`saven view`: the static dataset viewer, read back by a real headless Chromium.

A small dataset (two videos, one with a real encoded media file and keyframe JPEGs) carries planted markup in its
title, transcript, keyframe caption, QA option and dead-letter message: the browser must show it as text and build
no element or run no script from it. Then the page's own script must work under its Content-Security-Policy from
``file://`` (clicking a time seeks the video), the screenshot must be a picture, and ``--serve`` must answer on
127.0.0.1 only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import psutil
import pytest
from PIL import Image
from typer.testing import CliRunner

import llm_samples as S
from flows.cli import app
from viewer import VIEW_DIR, safe_name, video_page_href, write_viewer
from schemas.manifest import build_manifest, verify_manifest
from schemas.paths import keyframe_path
from schemas.records import AudioAxis, AudioEvent, DeadLetter, QAItem, QAKind, QAType, StageName
from schemas.settings import settings
from schemas.shards import consolidate_dead_letters, read_table, write_dead_letters, write_shard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` binary on PATH (the Makefile's apt "
                                                               "list installs Debian's chromium)")

VID, EMPTY_VID = S.VIDEO_ID, "local-emptyvideo01"
PWN_SCRIPT = "<script>document.title='pwned'</script>"
PWN_IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
TITLE = f"Park {PWN_SCRIPT}{PWN_IMG} & piano"
QA_TIME = 14.0  # the time-point question's anchor: clicking its time must seek there


def _qa_items() -> list[QAItem]:
    common = dict(video_id=VID, generator_model="hand-written", checks_passed=["options_distinct", "grounded"])
    return [
        QAItem(qa_id=f"{VID}.q000000000001", kind=QAKind.av, type=QAType.global_av_inference,
               question="Which sound goes with the dog in the park?", answer_index=2,
               options=["A piano", PWN_IMG, "Barking", "Rain"], evidence_clip_ids=[f"{VID}.c0000"], **common),
        QAItem(qa_id=f"{VID}.q000000000002", kind=QAKind.av_temporal, type=QAType.time_point_anchored,
               question=f"At 00:00:14.000, what does the man shout? {PWN_SCRIPT}", answer_index=0, start_s=QA_TIME,
               options=["Good boy, catch it!", "Sit!", "Come here!", "Stop!"], evidence_clip_ids=[f"{VID}.c0001"],
               **common),
        QAItem(qa_id=f"{VID}.q000000000003", kind=QAKind.av_temporal, type=QAType.time_range_anchored,
               question="From 00:00:24.800 to 00:00:37.200, what is played?", answer_index=3, start_s=24.8,
               end_s=37.2, options=["A drum", "A violin", "A flute", "A piano"],
               evidence_clip_ids=[f"{VID}.c0002"], **common),
    ]


def _audio_events() -> list[AudioEvent]:
    spans = [(1.0, 4.0, "dog barking", AudioAxis.event), (5.0, 9.0, "birds chirping", AudioAxis.environment),
             (26.0, 36.0, f"piano {PWN_SCRIPT}", AudioAxis.event)]
    return [AudioEvent(video_id=VID, clip_id=f"{VID}.c{int(s // 12.4):04d}", start_s=s, end_s=e, label=label,
                       axis=axis, score=0.8, tagger="hand-written") for s, e, label, axis in spans]


def _media(path: Path, seconds: float) -> None:
    """A real, tiny H.264 file as long as the video record says, so that seeking to any of its times is possible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=s=96x64:r=4:d={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(path)], check=True)


def _keyframes(dataset: Path) -> None:
    for i, clip in enumerate(S.clips()):
        path = keyframe_path(dataset, VID, clip.clip_id, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (160, 90), (40 * i, 120, 200 - 30 * i)).save(path, "JPEG")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("view") / "dataset"
    video = S.video_record().model_copy(update={"title": TITLE})
    empty = S.video_record(EMPTY_VID, 10.0)  # no media file, no clips: the page says so
    _media(d / video.media_path, S.DURATION_S)
    _keyframes(d)
    captions = S.visual_captions()
    captions[0] = captions[0].model_copy(update={"text": f"A dog {PWN_IMG}"})
    speech = S.speech() + [S.speech()[0].model_copy(update={"start_s": 30.0, "end_s": 31.5, "text": PWN_SCRIPT,
                                                              "clip_id": f"{VID}.c0002"})]
    write_shard(d, "videos", key=VID, records=[video])
    write_shard(d, "videos", key=EMPTY_VID, records=[empty])
    for table, records in (("clips", S.clips()), ("visual_captions", captions), ("audio_captions", S.audio_captions()),
                           ("descriptions", S.descriptions()), ("speech", speech), ("audio_events", _audio_events()),
                           ("qa", _qa_items())):
        write_shard(d, table, key=VID, records=records)
    failed = datetime(2025, 1, 1, tzinfo=timezone.utc)
    write_dead_letters(d, VID, [DeadLetter(stage=StageName.qa, video_id=VID, item_id=f"{VID}.q00000000000f",
                                           error_class="check:options_distinct", message=f"rejected: {PWN_IMG}",
                                           failed_at=failed, detail='{"question": "</pre><b>x</b>"}')])
    write_dead_letters(d, "src-0badf00d", [DeadLetter(stage=StageName.probe, source_id="/media/speech.flac",
                                                      video_id="local-0badf00d", error_class="no_video_stream",
                                                      message="no video stream", failed_at=failed)])
    consolidate_dead_letters(d)
    build_manifest(d)
    return d


@pytest.fixture(scope="module")
def site(dataset, tmp_path_factory) -> Path:
    return write_viewer(dataset, tmp_path_factory.mktemp("site") / "view")


# --- the browser -----------------------------------------------------------------------------------------------


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
           "--allow-file-access-from-files", "--hide-scrollbars", "--mute-audio", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def _dump_dom(url: str, profile: Path) -> str:
    return _chromium("--virtual-time-budget=3000", "--dump-dom", url, profile=profile).stdout


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], parents: list["Element"]):
        self.tag, self.attrs, self.parents, self.text = tag, attrs, parents, ""

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def inside(self, cls: str) -> "Element | None":
        return next((p for p in reversed(self.parents) if cls in p.classes), None)


class DOM(HTMLParser):
    """The elements of a serialised DOM, each with its ancestors and its text (decoded, as the browser holds it)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        el = Element(tag, {k: v or "" for k, v in attrs}, list(self._open))
        self.elements.append(el)
        if tag not in self.VOID:
            self._open.append(el)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data):
        for el in self._open:
            el.text += data

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        return [e for e in self.elements if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)]

    def by_id(self, id_: str) -> Element:
        return next(e for e in self.elements if e.attrs.get("id") == id_)


def _assert_nothing_planted_ran(dom: DOM) -> None:
    assert not [e for e in dom.elements if "data-pwned" in e.attrs]
    assert dom.all("title")[0].text != "pwned"
    assert not [e for e in dom.all("img") if e.attrs.get("src") == "x"]


class DevTools:
    """One page of a headless Chromium driven over the DevTools protocol (what clicking needs; --dump-dom cannot)."""

    def __init__(self, profile: Path):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio",
                                      f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "--autoplay-policy=no-user-gesture-required", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        for _ in range(600):  # Chromium writes its port here once it listens
            if port_file.is_file() and len(port_file.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        port = port_file.read_text().splitlines()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        self.ws = connect(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"], max_size=None,
                          open_timeout=30)
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return msg["result"]

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        while json.loads(self.ws.recv(timeout=60)).get("method") != "Page.loadEventFired":
            pass

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


# --- the pages -------------------------------------------------------------------------------------------------


def test_ids_become_safe_file_names_and_hrefs():
    assert safe_name("../etc/passwd") == "_.._etc_passwd"
    assert safe_name("a b/<c>") == "a_b__c_"
    assert video_page_href(VID) == f"videos/{VID}.html"
    assert video_page_href(VID, f"{VID}.q000000000002") == f"videos/{VID}.html#qa-{VID}.q000000000002"


@needs_chromium
def test_video_page_shows_the_data_as_text_in_chromium(dataset, site, tmp_path):
    page = site.parent / video_page_href(VID)
    dom = DOM(_dump_dom(page.as_uri(), tmp_path / "profile"))

    _assert_nothing_planted_ran(dom)
    assert PWN_SCRIPT in dom.all("title")[0].text and PWN_IMG in dom.all("h1")[0].text
    assert len(dom.all("script")) == 1  # ours, no other
    speech = dom.all("li", "speech-line")
    assert len(speech) == 3 and PWN_SCRIPT in speech[1].text  # sorted by time: 14 s, the planted 30 s, 51 s
    assert any(PWN_IMG in e.text for e in dom.all("div", "caption"))
    assert any(PWN_IMG in e.text for e in dom.all("td", "message"))

    video = dom.by_id("player")
    assert video.tag == "video" and "controls" in video.attrs
    assert (page.parent / video.attrs["src"]).resolve() == dataset / f"media/{VID}.mp4"
    clips = dom.all("section", "clip")
    assert [c.attrs["data-t"] for c in clips] == [f"{s:.3f}" for s, _ in S.BOUNDS]
    assert len([e for e in dom.all("img") if e.inside("clip")]) == len(S.BOUNDS)  # one keyframe each
    assert len(dom.all("div", "audio-event")) == 3 and all(e.inside("track") for e in dom.all("div", "audio-event"))
    assert all(float(e.attrs["data-t"]) >= 0 for e in dom.elements if "data-t" in e.attrs)

    qa = dom.all("article", "qa")
    assert [q.attrs["id"] for q in qa] == [video_page_href(VID, i.qa_id).split("#")[1] for i in _qa_items()]
    for item in _qa_items():
        options = [e for e in dom.all("li", "option") if e.inside("qa").attrs["id"] == f"qa-{item.qa_id}"]
        correct = [e for e in options if "correct" in e.classes]
        assert len(options) == 4 and len(correct) == 1
        assert item.options[item.answer_index] in correct[0].text and "✓" in correct[0].text
    times = [e for e in dom.all("button", "t") if e.inside("qa")]
    assert [t.attrs["data-t"] for t in times] == [f"{QA_TIME:.3f}", "24.800"]
    assert len(dom.all("tr", "dead-letter")) == 1


@needs_chromium
def test_index_lists_videos_counts_and_failures_in_chromium(site, tmp_path):
    dom = DOM(_dump_dom(site.as_uri(), tmp_path / "profile"))

    _assert_nothing_planted_ran(dom)
    assert len(dom.all("script")) == 0
    rows = dom.all("tr", "video")
    assert len(rows) == 2
    links = {a.attrs["href"] for a in dom.all("a") if a.inside("video")}
    assert links == {video_page_href(VID), video_page_href(EMPTY_VID)}
    assert all((site.parent / href).is_file() for href in links)
    park = next(r for r in rows if VID in r.text)
    assert PWN_IMG in park.text
    thumbs = [e for e in dom.all("img", "thumb")]
    assert len(thumbs) == 1 and (site.parent / thumbs[0].attrs["src"]).is_file()  # the empty video has none
    cells = [e.text for e in dom.all("td") if e.inside("video") and park in e.parents]
    assert cells[-4:] == ["1:00.0", "5", "3", "1"]  # duration, clips, QA, failures
    counts = " ".join(e.text for e in dom.all("li") if e.inside("counts"))
    assert "2videos" in counts and "3QA items" in counts and "2dead letters" in counts
    orphan = dom.all("tr", "dead-letter")
    assert len(orphan) == 1 and "/media/speech.flac" in orphan[0].text and "no_video_stream" in orphan[0].text


@needs_chromium
def test_clicking_a_time_seeks_the_video_from_file_urls(site, tmp_path):
    """The page's own script runs under its CSP from file://, the media and keyframes load, and a click seeks."""
    browser = DevTools(tmp_path / "profile")
    try:
        browser.open((site.parent / video_page_href(VID)).as_uri())
        duration = browser.js("""new Promise(done => {
            const v = document.getElementById('player');
            if (v.readyState >= 1) return done(v.duration);
            v.addEventListener('loadedmetadata', () => done(v.duration));
            v.addEventListener('error', () => done('error ' + v.error.code));
            setTimeout(() => done('no metadata'), 20000); })""")
        assert duration == pytest.approx(S.DURATION_S, abs=0.5)
        # Keyframes below the fold load lazily: ask for them all, then read their decoded sizes.
        widths = browser.js("""Promise.race([new Promise(done => setTimeout(() => done('images did not load'), 20000)),
            Promise.all([...document.images].map(i => { i.loading = 'eager'; return i.decode().then(
                () => i.naturalWidth, () => 'broken ' + i.src); }))])""")
        assert len(widths) == 2 * len(S.BOUNDS) and all(w == 160 for w in widths)

        t = browser.js("""document.querySelector('#qa-local-parkpiano01\\\\.q000000000002 button.t').click();
                          document.getElementById('player').currentTime""")
        assert t == pytest.approx(QA_TIME, abs=0.01)
        t = browser.js("""document.querySelector('#clip-local-parkpiano01\\\\.c0003 h3').click();
                          document.getElementById('player').currentTime""")
        assert t == pytest.approx(S.BOUNDS[3][0], abs=0.01)
        assert browser.js("document.body.hasAttribute('data-pwned') || document.title === 'pwned'") is False
    finally:
        browser.close()


@needs_chromium
def test_screenshot_is_a_real_picture(site, tmp_path):
    shot = tmp_path / "video.png"
    _chromium("--virtual-time-budget=3000", "--window-size=1280,1600", f"--screenshot={shot}",
              (site.parent / video_page_href(VID)).as_uri(), profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as img:
        assert img.size == (1280, 1600)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50  # text, keyframes, tracks


# --- the command -------------------------------------------------------------------------------------------------


def test_cli_writes_the_viewer_inside_the_dataset_without_touching_its_manifest(dataset):
    result = CliRunner().invoke(app, ["view", str(dataset)])
    assert result.exit_code == 0, result.output
    index = Path(result.output.strip())
    assert index == dataset / VIEW_DIR / "index.html" and index.is_file()
    assert (index.parent / video_page_href(EMPTY_VID)).is_file()
    assert verify_manifest(dataset) == []  # "_view" is no table: the dataset still verifies
    assert len(read_table(dataset, "qa")) == 3


def test_serve_binds_loopback_only_and_answers_ranges(dataset, tmp_path):
    (dataset.parent / "secret.txt").write_text("not part of the site")  # in the served folders' common parent
    out = dataset.parent / "site-served"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "view", str(dataset), "--out", str(out),
                             "--serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/site-served/index.html"), line
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("inet") if c.status == "LISTEN"]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)

        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and b"<table class=\"videos\">" in r.read()
        media = url.rsplit("/site-served/", 1)[0] + f"/dataset/media/{VID}.mp4"
        with urllib.request.urlopen(urllib.request.Request(media, headers={"Range": "bytes=10-19"}), timeout=30) as r:
            size = (dataset / "media" / f"{VID}.mp4").stat().st_size
            assert r.status == 206 and r.headers["Content-Range"] == f"bytes 10-19/{size}"
            assert r.read() == (dataset / "media" / f"{VID}.mp4").read_bytes()[10:20]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url.rsplit("/site-served/", 1)[0] + "/secret.txt", timeout=30)
        assert refused.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- the real demo dataset -------------------------------------------------------------------------------------


def assert_busiest_page_holds_every_row(real: Path, tmp_path: Path) -> None:
    """The viewer of a pipeline-built dataset, in Chromium: its busiest video's page holds every row of it."""
    index = write_viewer(real, tmp_path / "view")
    qa = read_table(real, "qa").to_pylist()
    assert qa, f"{real} has no QA item"
    vid = max({q["video_id"] for q in qa}, key=lambda v: sum(q["video_id"] == v for q in qa))
    dom = DOM(_dump_dom((index.parent / video_page_href(vid)).as_uri(), tmp_path / "profile"))

    def rows(table: str) -> list[dict]:
        return [r for r in read_table(real, table).to_pylist() if r["video_id"] == vid]

    assert dom.by_id("player").tag == "video"
    assert len(dom.all("section", "clip")) == len(rows("clips"))
    assert len(dom.all("li", "speech-line")) == len(rows("speech"))
    assert len(dom.all("div", "audio-event")) == len(rows("audio_events"))
    assert len(dom.all("tr", "dead-letter")) == len(rows("dead_letter"))
    items = dom.all("article", "qa")
    assert {q.attrs["id"] for q in items} == {video_page_href(vid, q["qa_id"]).split("#")[1] for q in rows("qa")}
    for item in items:
        assert len([e for e in dom.all("li", "correct") if e.inside("qa") is item]) == 1
    assert len(dom.all("script")) == 1


@needs_chromium
def test_real_demo_dataset_pages_in_chromium(tmp_path):
    """The dataset `make demo` built, when there is one here (the flow tests check one they build themselves:
    ``test_flow.test_the_viewer_shows_every_row_of_a_real_video``)."""
    real = settings().paths.output_dir / "demo" / "dataset"
    if not (real / "manifest.json").is_file():
        pytest.skip(f"no demo dataset at {real} (make demo builds it)")
    assert_busiest_page_holds_every_row(real, tmp_path)
