"""Serve the ``build-dataset`` deployment against the configured Prefect server (``make serve``).

Blocks while serving; ``flows.servers`` runs it as a managed background process. Start runs with
``prefect deployment run build-dataset/local -p sources=<file> -p output=<folder>``.
"""

from __future__ import annotations

import sys

from flows.build_dataset import build_dataset

DEPLOYMENT_NAME = "local"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv else DEPLOYMENT_NAME
    # One flow run at a time: on a 2-core machine concurrent runs only fight over the cores and the LLM server.
    build_dataset.serve(name=name, limit=1, description="Build a SAVEn-Vid dataset from a sources file.",
                        tags=["saven-vid"])


if __name__ == "__main__":
    main()
