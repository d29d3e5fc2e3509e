"""A real S3 API on loopback for the object-store tests: ``moto_server`` (PyPI ``moto[server]``) in a process group
of its own, a bucket, and the environment that points pyarrow, boto3 and every Ray worker at it.

``RefusingS3Proxy`` sits in front of it and answers every write with 403 AccessDenied (a bucket that refuses writes:
the fault moto itself cannot produce on demand without IAM set-up); reads pass through.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.client import HTTPConnection
from pathlib import Path

from loopback import HOST, LoopbackHTTPServer, QuietHandler

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class MotoS3:
    def __init__(self, log: Path):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def start(self, timeout_s: float = 60.0) -> "MotoS3":
        exe = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen([str(exe), "-H", HOST, "-p", str(self.port)], stdout=open(self.log, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).read()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        raise RuntimeError(f"moto_server did not answer on {self.url}")

    def create_bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.url, **{k.lower(): v for k, v in CREDENTIALS.items()
                                                     if k != "AWS_DEFAULT_REGION"},
                     region_name=CREDENTIALS["AWS_DEFAULT_REGION"]).create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


class _Refuse(QuietHandler):
    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = HTTPConnection(HOST, self.server.owner.upstream_port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        headers["Host"] = f"{HOST}:{self.server.owner.upstream_port}"
        upstream.request(self.command, self.path, body=body, headers=headers)
        reply = upstream.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for k, v in reply.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_body(403, b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                            b'<Message>Access Denied</Message></Error>', "application/xml")

    do_GET = do_HEAD = _forward
    do_PUT = do_POST = do_DELETE = _refuse


class RefusingS3Proxy(LoopbackHTTPServer):
    """Reads reach moto; every write is refused with 403 AccessDenied."""

    thread_name = "refusing-s3"

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        super().__init__(_Refuse)
