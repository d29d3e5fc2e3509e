"""Ray job submission entry point: run the same build-dataset flow on a Ray cluster.

Submit (from a machine that reaches the cluster's dashboard):

    python deploy/submit_job.py submit --address http://HEAD:8265 --sources sources.yaml \
        --output s3://my-bucket/saven/run1 --profile gpu-cluster --prefect-api-url http://PREFECT:4200/api [--wait]

The job runs ``python deploy/submit_job.py run ...`` on the cluster, which connects to it (RAY_ADDRESS is set by
Ray for job drivers) and reports to the Prefect server named by ``PREFECT_API_URL``; the same variable reaches
every Ray worker through the job's runtime environment. ``--output`` is an object-store URL (or a path every node
sees): nodes share nothing else. Object-store credentials come from the nodes themselves (instance role, a
credentials file, the environment `ray start` ran in), never from the job: Ray shows a job's runtime environment
in its dashboard, `ray job list` and the Jobs API, so only the clients' non-secret settings travel with it
(``schemas.store.STORE_CLIENT_ENV``: region, endpoint, profile name, credentials file path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(PROJECT_ROOT))
    from flows.build_dataset import build_dataset

    summary = build_dataset(sources=args.sources, output=args.output, profile=args.profile,
                            max_videos=args.max_videos, batch_size=args.batch_size)
    print(json.dumps({k: summary[k] for k in ("dataset", "videos_ok", "videos_failed", "rows", "workers")},
                     default=str))
    return 0


FORWARDED_ENV = ("SAVEN_PATHS__SCRATCH_DIR",)  # besides the store clients' settings


def submit(address: str, *, sources: str, output: str, profile: str, prefect_api_url: str,
           batch_size: int = 4, max_videos: int | None = None, extra_env: dict[str, str] | None = None,
           working_dir: str | None = None, python: str = "python") -> str:
    """Submit the flow as a Ray job; returns the submission id. `python` is the interpreter on the cluster."""
    from ray.job_submission import JobSubmissionClient

    sys.path.insert(0, str(PROJECT_ROOT))
    from schemas.settings import secret_setting_env
    from schemas.store import SECRET_ENV, STORE_CLIENT_ENV

    secrets = {*SECRET_ENV, *secret_setting_env()}
    held_back = [k for k in SECRET_ENV if k in os.environ]
    if held_back:
        print(f"not forwarded to the job (Ray would show them): {', '.join(held_back)}; the cluster's nodes bring "
              "their own credentials", file=sys.stderr)
    # Settings are read case-insensitively, and a whole section may come as JSON (SAVEN_LLM='{"api_key": ...}'):
    # a name that is a secret, or a section holding one, never travels.
    refused = sorted(k for k in extra_env or {} if k.upper() in secrets
                     or any(s.startswith(k.upper() + "__") for s in secrets))
    if refused:
        raise ValueError(f"{refused}: secrets never travel in a job's runtime env (the cluster's nodes hold their "
                         "own)")
    forwarded = (*STORE_CLIENT_ENV, *FORWARDED_ENV)
    extra_env = {**{k: os.environ[k] for k in forwarded if k in os.environ}, **(extra_env or {})}

    # Relative: the job runs in the shipped working_dir, or in the image's project folder (deploy/Dockerfile).
    entrypoint = [python, "deploy/submit_job.py", "run", "--sources", sources, "--output", output,
                  "--profile", profile, "--batch-size", str(batch_size)]
    if max_videos:
        entrypoint += ["--max-videos", str(max_videos)]
    env = {"PREFECT_API_URL": prefect_api_url, "SAVEN_PROFILE": profile, "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1",
           **(extra_env or {})}
    runtime_env: dict = {"env_vars": env}
    if working_dir:
        # Ship the project to the cluster; large local folders stay behind.
        runtime_env.update(working_dir=working_dir,
                           excludes=[".venv", ".venv-vllm", ".run", "out", ".git", "**/__pycache__"])
    client = JobSubmissionClient(address)
    # Ray joins the entrypoint into one shell line; quote each argument so paths and URLs stay single words.
    import shlex

    return client.submit_job(entrypoint=" ".join(shlex.quote(a) for a in entrypoint), runtime_env=runtime_env)


def wait(address: str, job_id: str, timeout_s: float = 3600.0) -> str:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status.value
        time.sleep(2.0)
    return "TIMEOUT"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("run", "submit"):
        p = sub.add_parser(name)
        p.add_argument("--sources", required=True)
        p.add_argument("--output", required=True)
        p.add_argument("--profile", default=os.environ.get("SAVEN_PROFILE", "gpu-cluster"))
        p.add_argument("--batch-size", type=int, default=4)
        p.add_argument("--max-videos", type=int, default=None)
        if name == "submit":
            p.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
            p.add_argument("--prefect-api-url", default=os.environ.get("PREFECT_API_URL"))
            p.add_argument("--working-dir", default=None, help="ship this project folder with the job")
            p.add_argument("--python", default="python", help="the interpreter that runs the job on the cluster")
            p.add_argument("--wait", action="store_true")
            p.add_argument("--env", action="append", default=[], metavar="SAVEN_X__Y=VALUE",
                           help="a setting for this job only (repeatable; never a secret: Ray shows it)")
    args = parser.parse_args(argv)
    if args.mode == "run":
        return _run(args)
    if not args.prefect_api_url:
        parser.error("--prefect-api-url (or PREFECT_API_URL) is required: the job reports to that Prefect server")
    pairs = [e.partition("=") for e in args.env]
    if any(not key or not sep for key, sep, _ in pairs):
        parser.error("--env takes KEY=VALUE")
    job_id = submit(args.address, sources=args.sources, output=args.output, profile=args.profile,
                    prefect_api_url=args.prefect_api_url, batch_size=args.batch_size, max_videos=args.max_videos,
                    working_dir=args.working_dir, python=args.python,
                    extra_env={key: value for key, _, value in pairs})
    print(job_id)
    if args.wait:
        status = wait(args.address, job_id)
        print(status)
        if status != "SUCCEEDED":
            from ray.job_submission import JobSubmissionClient

            print(JobSubmissionClient(args.address).get_job_logs(job_id)[-8000:], file=sys.stderr)
        return 0 if status == "SUCCEEDED" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
