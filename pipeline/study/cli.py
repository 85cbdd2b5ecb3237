"""`cfdg study run | report | cells FILE` (and `python -m pipeline.study ...`): the study's commands.

The top of the study package: it imports the others, none imports it. Prefect is imported only
by the commands that run it (`run`, `report --prefect`): importing it costs seconds and creates
PREFECT_HOME, and a bad study file must fail in one line having started nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cfdg.errors import CfdgError
from pipeline import faults, runlock
from pipeline.study.cell import default_parallel
from pipeline.study.report import write_report
from pipeline.study.spec import load_study
from pipeline.study.workspace import Plan


def _cmd_run(args: argparse.Namespace) -> int:
    runlock.begin_command(Path(args.root), "cfdg study run", args.verbose)
    plan = Plan.make(Path(args.root), args.study, allow_dirty=args.allow_dirty)  # bad input fails here
    if args.pool:
        from pipeline.study.pool import run_on_pool  # Prefect: see the module doc

        faults.quiet_console()
        result = run_on_pool(plan, pool=args.pool, remote=args.remote, repo=args.repo)
    else:
        plan.matching(args.only or ())  # a bad pattern too, before Prefect starts
        from pipeline.study.run import run_study  # Prefect: see the module doc

        result = run_study(
            plan,
            parallel=args.parallel,
            cell_retries=args.retries,
            stage_retries=args.stage_retries,
            allow_dirty=args.allow_dirty,
            only=args.only or (),
        )
    faults.mute_console()  # Prefect's closing lines would follow the summary
    for name, why in result["failed"].items():
        print(f"study: cell {name} failed: {why}", file=sys.stderr)
    print(
        f"study: {result['cells']} cells, {len(result['skipped'])} already finished, "
        f"{len(result['failed'])} failed; report {result['report']}"
    )
    if result["failed"]:
        print("study: rerun the same command to retry the failed cells (finished ones are skipped)", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    plan = Plan.make(Path(args.root), args.study, allow_dirty=True, validate=False)
    if args.prefect:
        from pipeline.study.run import publish_flow  # Prefect: see the module doc

        written = publish_flow(plan, args.mix_commits)
    else:
        written = write_report(plan, args.mix_commits)
    print(f"study: {written.summary}")
    print(f"study: report written to {written.path}")
    return 0


def _cmd_cells(args: argparse.Namespace) -> int:
    study = load_study(args.study, args.root, validate=not args.no_validate, check_files=not args.no_files)
    for c in study.cells:
        print(c.name)
    print(f"{study.name}: {len(study.cells)} cells", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `study` with its subcommands to a command line (`cfdg`, `python -m pipeline`)."""
    study = sub.add_parser("study", help="run a grid of pipeline runs (a study) and its paper-style report")
    ssub = study.add_subparsers(dest="study_command", required=True)

    p = ssub.add_parser("run", help="run the study's cells (N at once); finished cells are skipped")
    p.add_argument("study", help="study file, e.g. configs/study/tiny.yaml")
    p.add_argument("--root", default=".", help="project root (a git repository holding dvc.yaml)")
    p.add_argument("--parallel", "-j", type=int, help=f"cells at once (default: the cores, here {default_parallel()})")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed cell within this run (default 1)")
    p.add_argument("--stage-retries", type=int, default=0, help="retries of a failed stage before its cell fails")
    p.add_argument("--allow-dirty", action="store_true", help="run although tracked code has uncommitted changes")
    p.add_argument("--only", nargs="+", metavar="PATTERN", help="run only the pending cells matching these names/globs")
    p.add_argument("--verbose", "-v", action="store_true", help="print failed stages' tracebacks too (docs/faults.md)")
    p.add_argument("--pool", help="run the cells as flow runs on this Prefect work pool (see docs/studies.md)")
    p.add_argument("--remote", help="with --pool: DVC remote URL the cells push to and pull from")
    p.add_argument("--repo", help="with --pool: git URL the workers clone (default: this project's directory)")
    p.set_defaults(func=_cmd_run)

    p = ssub.add_parser("report", help="Tables 1, 2, 3, the compute table and curves from the cells' metrics")
    p.add_argument("study")
    p.add_argument("--root", default=".")
    p.add_argument("--prefect", action="store_true", help="also publish the tables and curves as Prefect artifacts")
    p.add_argument("--mix-commits", action="store_true", help="report cells of different commits together (noted)")
    p.set_defaults(func=_cmd_report)

    p = ssub.add_parser("cells", help="list the study's cells (validates every cell's params)")
    p.add_argument("study")
    p.add_argument("--root", default=".")
    p.add_argument("--no-validate", action="store_true")
    p.add_argument("--no-files", action="store_true", help="do not require D4RL source files to be present here")
    p.set_defaults(func=_cmd_cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.study")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["study", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except CfdgError as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 2
    finally:
        runlock.release_all()


if __name__ == "__main__":
    sys.exit(main())
