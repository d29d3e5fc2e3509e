"""Trust boundaries: what the pipeline trusts (the sources list a user wrote) and what it does not (anything a remote
source returns, a second writer, a browser on the viewer's port, a repeated key). Each test attempts the attack or
the accident with the real components (yt-dlp, a loopback HTTP server, moto's S3, a real viewer server) and checks
that it is refused, with a dead letter or a clear error, and that nothing leaks.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from schemas.lease import DatasetBusy, DatasetLease, LeaseRecord
from schemas.records import QAItem, QAType
from schemas.settings import load_settings
from schemas.shards import read_records, read_table, write_shard
from tasks.acquire import SourceExpander, acquire
from infra.errors import PermanentError
from test_acquire import FAST, make_video, settings_with
from test_benchmark_support import clips_of, make_question, video_id

REPO = Path(__file__).resolve().parents[1]


# -- a remote playlist or feed cannot make the pipeline read local files -------------------------------------------


def feed_with(server, entries: list[str]) -> str:
    items = "".join(f'<item><title>t{i}</title><enclosure url="{e}" type="video/mp4" length="1"/></item>'
                    for i, e in enumerate(entries))
    (server.www / "feed.xml").write_text(f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed</title>'
                                         f"{items}</channel></rss>")
    return f"{server.base}/feed.xml"


def test_a_remote_feed_cannot_list_local_files(server, tmp_path):
    (tmp_path / "home").mkdir()
    secret = make_video(tmp_path / "home" / "private.mp4")
    make_video(server.www / "public.mp4")
    feed = feed_with(server, [f"{server.base}/public.mp4", str(secret), secret.as_uri()])
    with SourceExpander(settings_with().acquire, backoff_s=FAST) as expander:
        got = expander.expand(feed)
    assert got.urls == [f"{server.base}/public.mp4"]
    assert set(got.refused) == {str(secret), secret.as_uri()}
    assert all("only the sources list may name local files" in r for r in got.refused.values())
    # A local file the user listed is still theirs to use.
    with SourceExpander(settings_with().acquire) as expander:
        assert expander.expand(str(secret)).urls == [str(secret)]


def test_the_flow_files_a_dead_letter_for_each_refused_entry(server, tmp_path):
    from flows.build_dataset import expand_sources

    secret = make_video(tmp_path / "private.mp4")
    make_video(server.www / "public.mp4")
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"- {feed_with(server, [f'{server.base}/public.mp4', str(secret)])}\n")
    dataset = tmp_path / "ds"
    got = expand_sources.fn(str(sources), load_settings("local-cpu"), None, str(dataset))
    assert got == [f"{server.base}/public.mp4"]
    (letter,) = read_table(dataset, "dead_letter").to_pylist()
    assert letter["source_id"] == str(secret) and letter["error_class"] == "untrusted_entry"
    assert "feed.xml" in letter["message"]


# -- no downloads from internal addresses where the profile says so -------------------------------------------------


def test_private_addresses_are_refused_before_any_request(server, tmp_path):
    make_video(server.www / "a.mp4")
    guarded = settings_with(block_private_networks=True).acquire
    for url in (f"{server.base}/a.mp4", "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x.mp4",
                "http://10.0.0.1/x.mp4"):
        with pytest.raises(PermanentError) as err:
            acquire(url, tmp_path / "out", guarded, backoff_s=FAST)
        assert err.value.error_class == "private_address", url
    with pytest.raises(PermanentError, match="non-public"):
        SourceExpander(guarded).expand(f"{server.base}/feed.xml")
    assert sum(server.requests.values()) == 0  # nothing was asked of the loopback server
    assert load_settings("gpu-cluster").acquire.block_private_networks  # on where the cluster runs
    assert not load_settings("local-cpu").acquire.block_private_networks  # off for the loopback test servers


# -- the cookie jar never lands in the dataset, even when a download is killed --------------------------------------


SLOW_DOWNLOAD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from schemas.settings import load_settings
    from tasks.acquire import acquire
    cfg = load_settings()
    cfg = cfg.acquire.model_copy(update={"cookies_file": Path(sys.argv[3]), "retries": 0})
    acquire(sys.argv[1], Path(sys.argv[2]), cfg)
""")


def test_a_download_killed_midway_leaves_no_cookie_jar_in_the_dataset(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    started = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(50_000_000))
            self.end_headers()
            started.set()
            try:
                for _ in range(600):
                    self.wfile.write(b"\0" * 4096)
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tsecret-cookie\n")
    dataset = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DOWNLOAD, f"http://127.0.0.1:{httpd.server_address[1]}/v.mp4",
                             str(dataset), str(cookies)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert started.wait(60), "the download never started"
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        httpd.shutdown()
    left = [p for p in dataset.rglob("*") if p.is_file()]
    assert not [p for p in left if "secret-cookie" in p.read_bytes().decode("latin-1")], left
    assert not [p for p in dataset.rglob("*") if p.name.startswith(".acquire-")]


def test_the_sweep_removes_a_work_folder_an_older_version_left(tmp_path):
    from schemas.commit import sweep_uncommitted

    old = tmp_path / ".acquire-0123456789abcdef"
    old.mkdir(parents=True)
    (old / "cookies.txt").write_text("session=secret")
    sweep_uncommitted(tmp_path)
    assert not old.exists()


# -- one writer per dataset ------------------------------------------------------------------------------------------


HOLDER = textwrap.dedent("""
    import sys, time
    from schemas.lease import DatasetLease
    lease = DatasetLease(sys.argv[1], "holder-under-test", ttl_s=float(sys.argv[2]), renew_every_s=float(sys.argv[3]))
    lease.acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def hold(dataset: str, ttl_s: float = 60.0, renew_s: float = 0.5) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, dataset, str(ttl_s), str(renew_s)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held", "the holder could not take the lease"
    return proc


def lease_cases(tmp_path, request) -> str:
    if request.param == "local":
        return str(tmp_path / "ds")
    s3 = request.getfixturevalue("s3")
    return f"{s3.bucket}/lease-{tmp_path.name}"


@pytest.fixture(params=["local", "s3"])
def dataset_uri(tmp_path, request) -> str:
    return lease_cases(tmp_path, request)


def test_a_second_writer_stops_at_once_naming_the_holder(dataset_uri):
    holder = hold(dataset_uri)
    try:
        started = time.monotonic()
        with pytest.raises(DatasetBusy) as busy:
            DatasetLease(dataset_uri, "second").acquire()
        message = str(busy.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message and "holder-under-test" in message
        assert time.monotonic() - started < 10  # at once, not after a wait
        # `saven compact` on the same dataset refuses too, with the same words
        compact = subprocess.run([sys.executable, "-m", "flows.cli", "compact", dataset_uri], cwd=REPO,
                                 capture_output=True, text=True, timeout=300)
        assert compact.returncode == 2 and f"pid {holder.pid}" in compact.stdout + compact.stderr
    finally:
        holder.kill()
        holder.wait()
    # Its holder died (kill -9): on the same machine the next run takes over at once, and renews.
    with DatasetLease(dataset_uri, "after", ttl_s=2.0, renew_every_s=0.3) as lease:
        time.sleep(1.0)
        assert lease.current().holder == lease.holder and lease.current().renewed_at > time.time() - 1.0
        lease.ensure()
    assert DatasetLease(dataset_uri, "probe").current() is None  # released


def test_a_lease_held_elsewhere_is_taken_over_only_once_it_expires(dataset_uri, tmp_path):
    from schemas.lease import _conditional
    from schemas.store import DatasetStore

    other = LeaseRecord(holder="elsewhere", host="another-machine", pid=1, command="saven build",
                        started_at=time.time(), renewed_at=time.time(), ttl_s=1.5)
    _conditional(DatasetStore.of(dataset_uri)).create(json.dumps(other.__dict__).encode())
    with pytest.raises(DatasetBusy, match="pid 1 on another-machine"):
        DatasetLease(dataset_uri, "too soon").acquire()
    time.sleep(2.0)
    with DatasetLease(dataset_uri, "after expiry") as lease:
        assert lease.current().holder == lease.holder


def test_writers_racing_for_a_lease_get_exactly_one(dataset_uri):
    racer = textwrap.dedent("""
        import sys, time
        from schemas.lease import DatasetBusy, DatasetLease
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        try:
            DatasetLease(sys.argv[1], "racer", ttl_s=60, renew_every_s=30).acquire()
            print("won", flush=True)
            time.sleep(5)
        except DatasetBusy:
            print("busy", flush=True)
    """)
    start = str(time.time() + 3.0)
    procs = [subprocess.Popen([sys.executable, "-c", racer, dataset_uri, start], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(4)]
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outcomes == ["busy", "busy", "busy", "won"]


def test_a_lease_taken_over_stops_the_run_that_lost_it(tmp_path):
    from schemas.lease import LeaseLost, _conditional
    from schemas.store import DatasetStore

    lease = DatasetLease(tmp_path / "ds", "slow run", ttl_s=2.0, renew_every_s=0.5).acquire()
    thief = LeaseRecord(holder="thief", host="another-machine", pid=1, command="saven build",
                        started_at=time.time(), renewed_at=time.time(), ttl_s=60)
    cond = _conditional(DatasetStore.of(tmp_path / "ds"))
    data, etag = cond.read()
    cond.replace(json.dumps(thief.__dict__).encode(), etag)  # as if this run had stalled past its expiry
    time.sleep(1.5)
    with pytest.raises(LeaseLost):
        lease.ensure()
    lease.release()
    assert lease.current().holder == "thief"  # the loser does not delete the winner's lease


# -- the viewer's server: the viewer and the dataset's public files, to this machine only ----------------------------


@pytest.fixture()
def viewer(tmp_path):
    from threading import Thread

    from viewer import make_server

    dataset = tmp_path / "ds"
    (dataset / "_cache").mkdir(parents=True)
    (dataset / "_cache" / "llm.sqlite").write_text("prompts and transcripts")
    (dataset / "_committed").mkdir()
    (dataset / "_committed" / "src-1.json").write_text("{}")
    (dataset / ".acquire-x").mkdir()
    (dataset / ".acquire-x" / "cookies.txt").write_text("session=secret")
    (dataset / "media").mkdir()
    (dataset / "media" / "v.mp4").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "outside.txt").write_text("not the dataset's")
    (dataset / "media" / "link.mp4").symlink_to(tmp_path / "outside.txt")
    site = dataset / "_view"
    site.mkdir()
    (site / "index.html").write_text("<p>index</p>")
    httpd, _ = make_server(site / "index.html", dataset, port=0)
    Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()


def get(port: int, path: str, **headers: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}", **headers})
    reply = conn.getresponse()
    return reply.status, reply.read()


def test_the_viewer_serves_nothing_private_and_only_to_this_machine(viewer):
    port = viewer
    assert get(port, "/_view/index.html")[0] == 200 and get(port, "/media/v.mp4")[0] == 200
    for private in ("/_cache/llm.sqlite", "/_committed/src-1.json", "/.acquire-x/cookies.txt",
                    "/media/link.mp4", "/../outside.txt", "/media/%2e%2e/%2e%2e/outside.txt"):
        status, body = get(port, private)
        assert status == 404 and b"secret" not in body and b"prompts" not in body, private
    # A page whose name an attacker pointed at 127.0.0.1 (DNS rebinding) sends its own name as Host.
    assert get(port, "/media/v.mp4", Host="evil.example")[0] == 400
    assert get(port, "/media/v.mp4", Host=f"localhost:{port}")[0] == 200
    # Ranges: a valid one is partial content, an invalid one (last before first) is ignored (RFC 9110 14.2), one
    # past the end is unsatisfiable.
    status, body = get(port, "/media/v.mp4", Range="bytes=5-9")
    assert status == 206 and body == bytes(range(5, 10))
    assert get(port, "/media/v.mp4", Range="bytes=5-3") == (200, bytes(range(256)) * 4)
    assert get(port, "/media/v.mp4", Range="bytes=5000-")[0] == 416


# -- a QA item's id is its own, and a shard never holds a key twice ---------------------------------------------------


def test_a_repeated_key_is_refused_at_commit_as_a_dead_letter(tmp_path):
    q = make_question(video_id(1), 0, QAType.global_av_inference, clips_of(1))
    twin = q.model_copy(update={"options": [*q.options[1:], q.options[0]], "answer_index": 3})  # same id, other item
    result = write_shard(tmp_path, "qa", key=video_id(1), records=[q, twin])
    assert result.rows == 1 and [d.error_class for d in result.dead_letters] == ["duplicate_key"]
    assert [r.qa_id for r in read_records(tmp_path, "qa", QAItem)] == [q.qa_id]
    letters = read_table(tmp_path, "dead_letter").to_pylist()
    assert letters and letters[0]["item_id"] == q.qa_id and "is already in this shard" in letters[0]["message"]


# -- what a published card and a pid file show ----------------------------------------------------------------------


def test_the_card_shows_no_signed_url_token_user_or_home_folder():
    from flows.report import public_source

    assert public_source("https://user:pw@cdn.example.com/v.mp4?X-Amz-Signature=abc123#t=5") == \
        "https://cdn.example.com/v.mp4?..."
    assert public_source("/home/alice/videos/holiday.mp4") == ".../holiday.mp4"
    assert public_source("file:///home/alice/v.mp4") == ".../v.mp4"


def test_a_server_pid_file_holds_no_setting_value(tmp_path, monkeypatch):
    from infra import servers

    monkeypatch.setenv("SAVEN_LLM__API_KEY", "sk-planted-secret")
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    spec = servers.ServerSpec(name="test-http", argv=[sys.executable, "-m", "http.server", str(number), "--bind",
                                                      "127.0.0.1"], env={}, health_url=f"http://127.0.0.1:{number}/",
                              startup_timeout_s=30, inherits_settings=True)
    try:
        servers.start(spec, tmp_path)
        text = spec.pid_file(tmp_path).read_text()
        assert "sk-planted-secret" not in text and "SAVEN_LLM__API_KEY" in text  # the name, never the value
        servers.start(spec, tmp_path)  # the same settings: the running server is ours
        monkeypatch.setenv("SAVEN_LLM__API_KEY", "another")
        with pytest.raises(servers.ServerError, match="another command line or SAVEN_"):
            servers.start(spec, tmp_path)
    finally:
        servers.stop(spec, tmp_path)
    cfg = load_settings("local-cpu", llm={"api_key": "sk-planted-secret"})
    assert "sk-planted-secret" not in repr(cfg) and "sk-planted-secret" not in cfg.model_dump_json()


def test_a_proxy_with_credentials_is_not_on_ffprobes_command_line(monkeypatch):
    import tasks.acquire as acquire_module

    seen = []
    real_run = subprocess.run

    def spy(args, **kwargs):  # the real ffprobe runs; its argv and environment are noted
        seen.append((list(args), (kwargs.get("env") or {}).get("http_proxy")))
        return real_run(args, **kwargs)

    monkeypatch.setattr(acquire_module.subprocess, "run", spy)
    cfg = load_settings("local-cpu", acquire={"proxy": "http://user:proxy-secret@127.0.0.1:9"}).acquire
    info = {"url": "http://127.0.0.1:9/v.mp4", "protocol": "http"}
    acquire_module._header_duration(info, cfg)
    (argv, env_proxy), = seen
    assert not any("proxy-secret" in a for a in argv) and env_proxy == "http://user:proxy-secret@127.0.0.1:9"
    assert "proxy-secret" not in repr(cfg)


def test_a_profile_is_a_name_not_a_path():
    with pytest.raises(ValueError, match="a profile is a name"):
        load_settings("../configs/local-cpu")
    with pytest.raises(ValueError, match="a profile is a name"):
        load_settings("/etc/passwd")


@pytest.mark.parametrize("name, value", [
    ("SAVEN_LLM__API_KEY", "sk-planted"),
    ("saven_llm__api_key", "sk-planted"),  # settings read names case-insensitively
    ("SAVEN_LLM", '{"api_key": "sk-planted"}'),  # a whole section as JSON
    ("SAVEN_ACQUIRE__PROXY", "http://user:pass@proxy:3128"),
    ("AWS_SECRET_ACCESS_KEY", "planted"),
])
def test_a_job_setting_that_is_or_holds_a_secret_is_refused_before_anything_is_sent(name, value):
    """``submit_job.py submit --env``: Ray shows a job's environment, so no secret setting travels there, however
    it is spelt; the refusal comes before the cluster is contacted (the address here answers nothing)."""
    sys.path.insert(0, str(REPO / "deploy"))
    import submit_job

    with pytest.raises(ValueError, match="secrets never travel"):
        submit_job.submit("http://127.0.0.1:9", sources="s.yaml", output="s3://b/d", profile="gpu-cluster",
                          prefect_api_url="http://127.0.0.1:9/api", extra_env={name: value})
