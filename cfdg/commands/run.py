"""`cfdg run`: the whole loop, the same as `python -m pipeline run` (kept in pipeline/, not here)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the whole pipeline (Prefect over the DVC stages), print the report path")
    p.add_argument("--root", default=".", help="project root holding dvc.yaml and params.yaml")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed stage before the run fails")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.__main__ import main

    return main(["run", "--root", args.root, "--retries", str(args.retries)])
