"""`make fault`: build-dataset over generated sources, a quarter of them broken, while things go wrong around it.

1. Sources: short synthetic videos and broken ones (``tests.fault.sources``) served from loopback.
2. Faulty build: the flow runs as a subprocess (``saven build``) with its LLM behind a chaos proxy (a window of
   500s, hangs and garbage); it is SIGKILLed ``--kills`` times at random points (after a random number of new
   commits, plus a random delay) and resumed; during the second run one Ray worker process (a perception actor when
   one is up) is SIGKILLed; then runs go on until one completes with nothing left to retry.
3. Reference build: the same sources, uninterrupted, no chaos, with a copy of the faulty build's LLM cache (so the
   same requests get the same replies; a request it must still send is counted).
4. Injection build: the sample whose narration says "ignore previous instructions..." alone, with every QA type
   (the faulty build asks only the cross-scene one), on the grounded QA model (the profile's own):
   its QA must be valid and about the video, and every request must quote the narration as data.
5. Figures: good sources landed / expected, bad sources dead-lettered with a reason / expected, duplicate rows, QA
   rows failing the schema or a QA check, and whether both datasets are equal by content; printed, written to
   ``<out>/summary.json``; the exit status is 1 when a target is missed.

    python -m tests.fault.run [--sources 200] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import yaml
from rich.console import Console
from rich.table import Table

from infra import servers
from schemas.commit import committed
from flows.demo import use_demo_llm
from schemas.commit import source_key
from schemas.settings import PROJECT_ROOT, settings

from . import evaluate
from .chaos import ChaosProxy
from .injection import INJECTION_RE, quoting_problems
from .server import MediaServer
from .sources import LAND, MAX_DURATION_S, MAX_REFUSED_FRACTION, build_media, plan, serve

console = Console(stderr=True)
PERCEPTION_ACTORS = ("ray::StageActor",)  # every actor stage runs in one (the media chain is a task)
RUN_TIMEOUT_S = 3 * 3600
# The run measures what faults do to the dataset, not caption or QA coverage. On a 2-core machine the CPU LLM server
# and the perception workers share the cores, and the LLM server sets the pace: its prefill runs at ~150-230 prompt
# tokens/s, so prompt tokens are the cost (the reference run, with every reply cached, takes ~2 s per video). The
# work per video is trimmed, for 200 sources run twice (faulty and reference): most generated videos are one scene
# (one clip, one fusion request; every fifth has three, see ``sources._scenes``), the QA type is the cross-scene
# question (so only videos with cuts get QA: one draft each, every check), one keyframe per clip, four batches of
# four in flight.
# Fusion of every clip stays whole, and every check of the QA that is written still runs. The prompt-injection
# video gets every QA type in a build of its own. Measured (200 sources): 27.5 and 27.6 min; faulty runs 20.8 and
# 20.1 min, then the reference, ~4.9 min, beside the injection build, 5.8 and 6.4 min (README: the history).
WORKLOAD = {"SAVEN_QA__TYPES": '["cross_scene_transition"]', "SAVEN_QA__ATTEMPTS_PER_TYPE": "1",
            "SAVEN_SEGMENT__KEYFRAMES_PER_CLIP": "1", "SAVEN_RAY__BATCHES_IN_FLIGHT": "4"}
# The injection build: one draft of every QA type the video allows, all in one request, every draft judged
# (``evaluate.injection_outcome``); a second, warmer round only for a type the first left without a usable line (a
# CI run once got one unreadable reply and so no draft to judge). It is bound by reply latency: Qwen2.5-0.5B in fp32
# decodes one request at 6-8 tok/s on 2 cores.
INJECTION_WORKLOAD = {"SAVEN_QA__ATTEMPTS_PER_TYPE": "2"}
# Dedup after download is off in the faulty and reference builds, whatever the workload: the generated videos share
# footage by construction (one generator's test patterns), and which of two videos keeps a shared clip (the other's
# is flagged and gets no QA) depends on which committed first, which the kills change on purpose. A CI run found
# exactly that (one `dedup` row and 3 QA items apart). Dedup's decisions are tested in tests/test_dedup.py.
ORDER_FREE = {"SAVEN_DEDUP__ENABLED": "false"}


@dataclass
class RunRecord:
    n: int
    role: str  # "faulty", "reference" or "injection"
    seconds: float = 0.0
    returncode: int | None = None
    killed: bool = False
    kill_after_commits: int | None = None
    committed_before: int = 0
    committed_after: int = 0
    ray_worker_killed: str | None = None
    commits_after_worker_kill: int | None = None
    bytes_by_path: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- processes


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the flow and everything it started (Ray's raylet, GCS and workers included), nothing else."""
    family = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    family += _descendants(proc.pid)
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)
    psutil.wait_procs(family, timeout=30)


def ray_workers(proc: subprocess.Popen) -> list[tuple[str, psutil.Process]]:
    """This flow's busy Ray workers, titled ``ray::<what it runs>``."""
    workers = []
    for p in _descendants(proc.pid):
        try:
            title = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title.startswith("ray::") and not title.startswith(("ray::IDLE", "ray::DashboardAgent",
                                                               "ray::RuntimeEnvAgent")):
            workers.append((title, p))
    return workers


def kill_ray_worker(workers: list[tuple[str, psutil.Process]], rng: random.Random) -> str | None:
    """SIGKILL one Ray worker of this flow: a perception actor when one is up, else any task worker."""
    actors = [w for w in workers if w[0].startswith(PERCEPTION_ACTORS)]
    pick = rng.choice(actors or workers) if workers else None
    if pick is None:
        return None
    try:
        pick[1].kill()
    except psutil.NoSuchProcess:
        return None
    return f"{pick[0]} (pid {pick[1].pid})"


# ---------------------------------------------------------------- one flow run


@dataclass
class Build:
    sources_file: Path
    dataset: Path
    cache: Path
    env: dict[str, str]
    logs: Path
    batch_size: int

    def start(self, n: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "flows.cli", "build", "--sources", str(self.sources_file), "--output",
               str(self.dataset), "--llm-cache", str(self.cache), "--batch-size", str(self.batch_size)]
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{self.dataset.name}-run{n:02d}.log", "wb")
        return subprocess.Popen(cmd, env=self.env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def run_once(build: Build, record: RunRecord, media: MediaServer, rng: random.Random, *,
             kill_after: int | None = None, kill_after_s: float | None = None, kill_worker: bool = False,
             status: Callable[[], str] | None = None) -> RunRecord:
    """One flow process; SIGKILLed ``kill_after`` new commits (plus a random delay) in, or ``kill_after_s`` seconds
    in, when one is given."""
    before_bytes = {p: s.bytes_sent for p, s in media.stats.items()}
    record.committed_before = len(committed(build.dataset))
    record.kill_after_commits = kill_after
    started = time.monotonic()
    proc = build.start(record.n)
    kill_at: float | None = started + kill_after_s if kill_after_s is not None else None
    # The worker dies while the run is busy: a few seconds after the first perception actor is up (models loading or
    # loaded, media being decoded), early enough for the run to go on. Tied to what the run is doing, not to a clock:
    # a fixed time missed a fast run (CI: a run ended at 33 s, before a kill drawn between 30 and 60 s).
    worker_at: float | None = None
    worker_deadline = started + 120.0  # no actor by then: any busy worker will do
    worker_done_before = 0
    next_report = started + 120.0
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            done = len(committed(build.dataset)) - record.committed_before
            if time.monotonic() >= next_report:
                next_report += 120.0
                console.print(f"  {record.role} run {record.n}: {time.monotonic() - started:.0f} s, {done} new commits"
                              + (f"; {status()}" if status else ""))
            worker_pending = kill_worker and record.ray_worker_killed is None
            if worker_pending:
                workers = ray_workers(proc)
                if worker_at is None and any(w[0].startswith(PERCEPTION_ACTORS) for w in workers):
                    worker_at = time.monotonic() + rng.uniform(2.0, 8.0)
                if workers and time.monotonic() >= (worker_at or worker_deadline):
                    record.ray_worker_killed = kill_ray_worker(workers, rng)
                    worker_done_before = done
            if kill_after is not None and kill_at is None and done >= kill_after:
                kill_at = time.monotonic() + rng.uniform(0.0, 8.0)
            # The run that kills a worker is not SIGKILLed before it has (the flow's kill would take the worker too).
            if kill_at is not None and time.monotonic() >= kill_at and not (
                    kill_worker and record.ray_worker_killed is None and time.monotonic() < worker_deadline):
                kill_tree(proc)
                record.killed = True
                break
            if time.monotonic() - started > RUN_TIMEOUT_S:
                kill_tree(proc)
                raise RuntimeError(f"run {record.n} of {build.dataset} took over {RUN_TIMEOUT_S} s")
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    record.returncode = proc.returncode
    record.seconds = time.monotonic() - started
    record.committed_after = len(committed(build.dataset))
    if record.ray_worker_killed:
        record.commits_after_worker_kill = record.committed_after - record.committed_before - worker_done_before
    record.bytes_by_path = {p: s.bytes_sent - before_bytes.get(p, 0) for p, s in media.stats.items()}
    state = "SIGKILLed" if record.killed else f"exit {record.returncode}"
    console.print(f"[bold]{record.role} run {record.n}[/]: {state} after {record.seconds:.0f} s, "
                  f"{record.committed_after - record.committed_before} new commits"
                  + (f"; killed Ray worker {record.ray_worker_killed}" if record.ray_worker_killed else ""))
    return record


def retryable_left(dataset: Path, keys: set[str]) -> set[str]:
    """Uncommitted sources whose failure a rerun can fix (a transient fault, or a process that died)."""
    markers = committed(dataset)
    letters = evaluate.letters_by_source_key(dataset)
    return {k for k in keys if k not in markers
            and any(r["transient"] or r["stage"] == "flow" for r in letters.get(k, []))}


def copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a WAL-mode sqlite file (what killed writers left in the WAL included)."""
    dst.unlink(missing_ok=True)
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- the whole run


def ensure_servers(cfg) -> list:
    """Start the profile's Prefect and LLM servers unless ours already run; returns the specs this call started."""
    started = []
    for spec, start in ((servers.prefect_server_spec(cfg), servers.start_prefect_server),
                        (servers.llm_server_spec(cfg), servers.start_llm_server)):
        running = servers.is_running(spec, cfg.paths.run_dir)
        start(cfg)  # also when running: a server of ours started for another model is an error, not reused
        if not running:
            started.append(spec)
    return started


def fault_run(n_sources: int, out: Path, *, seed: int = 0, kills: int = 3, batch_size: int = 4,
              chaos_window_s: float = 120.0, final_runs: int = 3, media_cache: Path | None = None,
              demo_llm: bool = True, workload: dict[str, str] | None = None) -> dict:
    """``demo_llm``: serve the demo's LLM (``demo.llm_model``; with SmolLM2, whose questions mostly fail the checks,
    the prompt-injection video may end with no QA row to judge: Qwen2.5-0.5B is the model for a full run).
    ``workload``: settings for the flow (default ``WORKLOAD``)."""
    cfg = use_demo_llm(settings()) if demo_llm else settings()
    wall = time.monotonic()
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    markers_dir = out / "markers"
    markers_dir.mkdir(exist_ok=True)
    for stale in ("faulty", "reference", "injection", "logs"):
        shutil.rmtree(out / stale, ignore_errors=True)

    sources = plan(n_sources, markers_dir)
    t = time.monotonic()
    media_cache = media_cache or out / "media-cache"
    files = build_media(sources, media_cache)
    console.print(f"media for {len(sources)} sources ready in {time.monotonic() - t:.0f} s")
    media = MediaServer().start()
    # 90% of requests faulted for the window: a request's five attempts all fail often enough that some videos end
    # with transient dead letters, which the later runs must retry.
    proxy = ChaosProxy(cfg.llm.resolved_base_url, seed=seed, window_s=chaos_window_s, fault_rate=0.9,
                       capture=INJECTION_RE.pattern)
    counter = ChaosProxy(cfg.llm.resolved_base_url, fault_rate=0.0, capture=INJECTION_RE.pattern)
    grounded = servers.grounded_qa_server(cfg)
    inj_proxy = ChaosProxy(grounded[1] if grounded else cfg.llm.resolved_base_url, fault_rate=0.0,
                           capture=INJECTION_RE.pattern)
    proxy.start()
    counter.start()
    inj_proxy.start()
    started_servers = ensure_servers(cfg)
    # Only the injection build, at the end, needs the grounded QA server: it starts while the faulty runs go (its
    # ~75 s of start-up overlap the first run's LLM chaos window, when the profile's server is mostly idle).
    background = ThreadPoolExecutor(max_workers=1)
    grounded_up = None
    if grounded is not None and not servers.is_running(grounded[0], cfg.paths.run_dir):
        grounded_up = background.submit(servers.start, grounded[0], cfg.paths.run_dir)
        started_servers.append(grounded[0])
    records: list[RunRecord] = []
    try:
        serve(sources, files, media)
        sources_file = out / "sources.yaml"
        # Broken sources spread through the list, as in a real one: their waits (retry backoff, a refused
        # stream) overlap other videos' work instead of forming the run's tail.
        order = list(sources)
        random.Random(f"order-{seed}").shuffle(order)
        sources_file.write_text(yaml.safe_dump([s.url for s in order], allow_unicode=True, width=1000))
        plain_env = {**os.environ, **servers.prefect_env(cfg), "SAVEN_ACQUIRE__MAX_DURATION_S": str(MAX_DURATION_S),
                     "SAVEN_ACQUIRE__BACKOFF_S": "1.0", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                     "TRANSFORMERS_OFFLINE": "1"}
        base_env = {**plain_env, **(WORKLOAD if workload is None else workload), **ORDER_FREE}
        faulty = Build(sources_file, out / "faulty", out / "faulty-llm.sqlite",
                       {**base_env, "SAVEN_LLM__BASE_URL": proxy.base_url}, out / "logs", batch_size)
        faulty.cache.unlink(missing_ok=True)
        keys = {source_key(s.url) for s in sources}
        good_keys = {source_key(s.url) for s in sources if s.expect == LAND}
        transient_seen: set[str] = set()

        # Faulty phase: kills at random points, a Ray worker killed in the second run, then complete runs.
        n = 0
        while sum(r.killed for r in records) < kills and n < kills * 3:
            n += 1
            remaining = len(good_keys - set(committed(faulty.dataset)))
            # A batch commits its videos together, so earlier kills can land after everything has committed: a run
            # with no commit left to wait for is killed a few seconds in (start-up, sweep, finalize), which a resume
            # must survive just the same.
            kill_after = rng.randint(1, max(1, remaining // (2 * kills))) if remaining else None
            kill_after_s = None if remaining else rng.uniform(3.0, 12.0)
            records.append(run_once(faulty, RunRecord(n, "faulty"), media, rng, kill_after=kill_after,
                                    kill_after_s=kill_after_s, kill_worker=n == 2,
                                    status=lambda: f"LLM proxy {proxy.summary()}"))
            transient_seen |= retryable_left(faulty.dataset, keys)
        for _ in range(final_runs):
            n += 1
            rec = run_once(faulty, RunRecord(n, "faulty"), media, rng, kill_worker=not any(
                r.ray_worker_killed for r in records), status=lambda: f"LLM proxy {proxy.summary()}")
            records.append(rec)
            left = retryable_left(faulty.dataset, keys)
            transient_seen |= left
            if rec.returncode == 0 and not left:
                break

        # Reference: uninterrupted, no chaos, the faulty build's LLM replies. With every reply cached it is
        # perception-bound, so the prompt-injection build, bound by its own LLM server, runs beside it.
        media.reset()
        reference = Build(sources_file, out / "reference", out / "reference-llm.sqlite",
                          {**base_env, "SAVEN_LLM__BASE_URL": counter.base_url}, out / "logs", batch_size)
        copy_sqlite(faulty.cache, reference.cache)

        # Prompt injection: the narrated sample alone, with every QA type (``INJECTION_WORKLOAD``), through a proxy that
        # captures every request quoting the narration; on the grounded QA model when it is installed (SmolLM2's
        # drafts mostly fail the checks, which would leave few drafts that say anything).
        inj_sources = out / "injection-sources.yaml"
        inj_sources.write_text(yaml.safe_dump([s.url for s in sources if s.injection], allow_unicode=True))
        inj_env = {**plain_env, **INJECTION_WORKLOAD, "SAVEN_LLM__BASE_URL": inj_proxy.base_url}
        if grounded is not None:
            inj_env["SAVEN_LLM__MODEL"] = servers.GROUNDED_QA_MODEL
        injection = Build(inj_sources, out / "injection", out / "injection-llm.sqlite", inj_env, out / "logs", 1)
        injection.cache.unlink(missing_ok=True)
        if grounded_up is not None:
            grounded_up.result()
        with ThreadPoolExecutor(max_workers=2) as pool:
            side_by_side = [pool.submit(run_once, reference, RunRecord(1, "reference"), media, rng),
                            pool.submit(run_once, injection, RunRecord(1, "injection"), media, rng)]
            records += [f.result() for f in side_by_side]

        return summarise(sources, faulty.dataset, reference.dataset, records, proxy, counter, transient_seen,
                         markers_dir, out, media_cache, time.monotonic() - wall, injection.dataset, inj_proxy)
    finally:
        background.shutdown(wait=True)  # a server still starting is stopped below, not left behind
        proxy.stop()
        counter.stop()
        inj_proxy.stop()
        media.stop()
        for spec in started_servers:
            servers.stop(spec, cfg.paths.run_dir)


def summarise(sources, faulty: Path, reference: Path, records: list[RunRecord], proxy: ChaosProxy,
              counter: ChaosProxy, transient_seen: set[str], markers_dir: Path, out: Path, media_cache: Path,
              wall_s: float, injection_dataset: Path, inj_proxy: ChaosProxy) -> dict:
    outcomes = evaluate.source_outcomes(faulty, sources)
    dups = evaluate.duplicate_rows(faulty)
    qa_rows, qa_bad, qa_reasons = evaluate.qa_failures(faulty)
    a, b = evaluate.content(faulty), evaluate.content(reference)
    diff = evaluate.content_diff(a, b)
    ref_outcomes = evaluate.source_outcomes(reference, sources)
    markers = committed(faulty)
    transient_landed = sorted(k for k in transient_seen if k in markers)
    transient_good = {source_key(s.url) for s in sources if s.expect == LAND} & transient_seen

    long_paths = {s.path: s for s in sources if s.kind == "too_long"}
    # The injection build runs beside the reference and fetches one video: its byte counts are the reference's.
    long_bytes = max((r.bytes_by_path.get(p, 0) for r in records if r.role != "injection" for p in long_paths),
                     default=0)
    long_size = next((f.stat().st_size for f in media_cache.rglob("three-hours.mp4")), 1)

    inj_source = next(s for s in sources if s.injection)
    injection = evaluate.injection_outcome(injection_dataset, outcomes["video_ids"].get(inj_source.index))
    captured = proxy.captured + counter.captured + inj_proxy.captured
    quoting = [p for body in captured for p in quoting_problems(body.get("messages", []))]
    injection.update(requests_with_narration=len(captured), quoting_problems=quoting[:10])
    injection["ok"] = injection["ok"] and bool(captured) and not quoting

    escapes = evaluate.files_outside(faulty, [out], [markers_dir / f"pwned-{s.index}" for s in sources])
    escapes += [str(p) for p in PROJECT_ROOT.glob("pwned-*")]
    faulty_runs = [r for r in records if r.role == "faulty"]
    injection["build_seconds"] = round(next((r.seconds for r in records if r.role == "injection"), 0.0), 1)
    injection["qa_model"] = next((body.get("model") for body in inj_proxy.captured), None)
    summary = {
        "sources": len(sources),
        "good_landed": outcomes["good_landed"], "good_expected": outcomes["good_expected"],
        "bad_dead_lettered": outcomes["bad_dead_lettered"], "bad_expected": outcomes["bad_expected"],
        "duplicate_rows": sum(dups.values()), "duplicates_by_table": dups,
        "qa_rows": qa_rows, "qa_rows_failing": qa_bad, "qa_failures": qa_reasons[:20],
        "equal_to_uninterrupted": not diff, "content_diff": diff,
        "reference_landed": ref_outcomes["good_landed"], "reference_llm_requests": counter.requests,
        "wall_s": round(wall_s, 1),
        "faulty_runs": len(faulty_runs), "sigkills": sum(r.killed for r in faulty_runs),
        "ray_worker_killed": next((r.ray_worker_killed for r in records if r.ray_worker_killed), None),
        "chaos": proxy.summary(),
        "transient_sources_seen": len(transient_seen), "transient_sources_landed": len(transient_landed),
        "transient_good_sources": len(transient_good),
        "three_hour_bytes_max_per_run": long_bytes, "three_hour_size": long_size,
        "injection": injection, "escapes": escapes, "manifest_problems": evaluate.manifest_problems(faulty),
        "good_missing": outcomes["good_missing"], "bad_wrong": outcomes["bad_wrong"],
        "bad_classes": outcomes["bad_classes"],
        "runs": [asdict(r) | {"bytes_by_path": None} for r in records],
    }
    checks = {
        "good sources landed": summary["good_landed"] == summary["good_expected"],
        "bad sources dead-lettered with a reason": summary["bad_dead_lettered"] == summary["bad_expected"],
        "no duplicate rows": summary["duplicate_rows"] == 0,
        "no QA row failing the schema or checks": qa_bad == 0,
        "equal to the uninterrupted run": not diff,
        "3 SIGKILLs and a killed Ray worker": summary["sigkills"] >= 3 and bool(summary["ray_worker_killed"]),
        "chaos injected faults": sum(proxy.faults.values()) > 0,
        "transient failures retried to landing": transient_good <= set(transient_landed),
        "3-hour stream refused without download": 0 < long_bytes <= MAX_REFUSED_FRACTION * long_size
        if long_paths else True,
        "prompt injection quoted, QA valid": injection["ok"],
        "nothing outside the output folder": not escapes,
        "manifest verifies": not summary["manifest_problems"],
    }
    summary["checks"] = checks
    summary["passed"] = all(checks.values())
    return summary


def print_summary(summary: dict) -> None:
    table = Table(title=f"make fault: {summary['sources']} sources, {summary['faulty_runs']} faulty runs "
                        f"({summary['sigkills']} SIGKILLed), wall {summary['wall_s'] / 60:.1f} min")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    pct = lambda a, b: f"{a}/{b} ({100 * a / b:.0f}%)" if b else "0/0"
    table.add_row("good sources landed / expected", pct(summary["good_landed"], summary["good_expected"]), "100%")
    table.add_row("bad sources in the dead-letter with a reason / expected",
                  pct(summary["bad_dead_lettered"], summary["bad_expected"]), "100%")
    table.add_row("duplicate rows", str(summary["duplicate_rows"]), "0")
    table.add_row("QA rows failing the schema or checks", f"{summary['qa_rows_failing']} of {summary['qa_rows']}",
                  "0")
    table.add_row("dataset equals the uninterrupted run", "yes" if summary["equal_to_uninterrupted"] else "no",
                  "yes")
    table.add_row("wall time", f"{summary['wall_s'] / 60:.1f} min", "< 30 min")
    console.print(table)
    for name, ok in summary["checks"].items():
        console.print(f"  {'[green]ok[/]  ' if ok else '[red]MISS[/]'} {name}")
    console.print(f"  chaos: {summary['chaos']}; Ray worker killed: {summary['ray_worker_killed']}; "
                  f"transient sources retried: {summary['transient_sources_landed']}/"
                  f"{summary['transient_sources_seen']}; 3-hour stream: {summary['three_hour_bytes_max_per_run']:,}"
                  f" of {summary['three_hour_size']:,} bytes sent; reference LLM requests: "
                  f"{summary['reference_llm_requests']}")
    if not summary["equal_to_uninterrupted"]:
        console.print(f"  content diff: {summary['content_diff']}")
    for key in ("good_missing", "bad_wrong", "qa_failures", "escapes", "manifest_problems"):
        if summary[key]:
            console.print(f"  {key}: {json.dumps(summary[key], default=str)[:2000]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=200, help="how many sources (a quarter broken)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=3)
    # Four videos a batch, four batches in flight (``WORKLOAD``): a batch commits when its slowest video is done, and a
    # SIGKILL loses what is in flight, so smaller batches commit sooner and lose less.
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--chaos-window", type=float, default=120.0, help="seconds the LLM chaos lasts")
    parser.add_argument("--out", type=Path, default=None, help="default: <output_dir>/fault")
    args = parser.parse_args(argv)
    out = (args.out or settings().paths.output_dir / "fault").resolve()
    summary = fault_run(args.sources, out, seed=args.seed, kills=args.kills, batch_size=args.batch_size,
                        chaos_window_s=args.chaos_window)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_summary(summary)
    console.print(f"summary: {out / 'summary.json'}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
