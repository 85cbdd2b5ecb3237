"""The user's `cfdg` command: the pipeline commands beside the library's own.

    cfdg run | round | serve | server | preset | check | table     (the pipeline, this module)
    cfdg study run | report | cells                                (a grid of runs, pipeline/study/)
    cfdg dataset | store | agent | quality                         (the library, cfdg.cli)

run     the whole loop now, in this process (Prefect ephemeral mode, no server needed)
round   run (or redo) one generation round k: rollout, fit, materialise
server  start a local Prefect server with telemetry off (UI at http://127.0.0.1:4200)
serve   register the `cfdg-run` and `cfdg-round` deployments with that server and run them
        when asked (from the UI, `prefect deployment run`, or a retry of a failed flow run)
preset  merge a preset (configs/*.yaml) into params.yaml, keeping comments
check   validate every section of params.yaml
table   the paper's Table 1 from several runs' summary.json files

This layer sits above both cfdg/ (the library) and pipeline/ (orchestration); `python -m
pipeline` is the same command. A new pipeline command: a `register(sub)` function, listed in
`add_pipeline_commands`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

import pipeline  # noqa: F401  (environment defaults before prefect is imported)
from cfdg.cli import add_library_commands, dispatch, new_parser
from cfdg.errors import CfdgError, ConfigError
from pipeline import faults, runlock, sections
from pipeline.preset import apply_preset
from pipeline.study.cli import register as register_study
from stages.report import table_main

LOCAL_API = "http://127.0.0.1:4200/api"


def _fault_exit(fault: faults.Fault, command: str) -> int:
    """The fault's one line, last on the terminal (Prefect's closing lines are muted)."""
    faults.mute_console()
    print(f"cfdg: {fault.line(command)}", file=sys.stderr)
    return 1


def _cmd_run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    runlock.begin_command(root, "cfdg run", args.verbose)
    checked_params(root / "params.yaml")  # a bad param is one line, before Prefect starts
    from pipeline.flows import cfdg_run

    faults.quiet_console()
    try:
        report = cfdg_run(root=str(root.resolve()), retries=args.retries)
    except faults.StageFault as e:
        return _fault_exit(e.fault, "cfdg run")
    faults.mute_console()
    print(f"cfdg: report written to {report}")
    return 0


def _cmd_round(args: argparse.Namespace) -> int:
    root = Path(args.root)
    command = f"cfdg round {args.k}"
    runlock.begin_command(root, command, args.verbose)
    path = root / "params.yaml"
    table = checked_params(path).rounds
    if args.k not in table:
        raise ConfigError(f"{path}:rounds: round {args.k} is not in the table (rounds {list(table)})")
    from pipeline.flows import cfdg_round

    faults.quiet_console()
    try:
        row = cfdg_round(args.k, root=str(root.resolve()), retries=args.retries)
    except faults.StageFault as e:
        return _fault_exit(e.fault, command)
    faults.mute_console()
    print(json.dumps(row))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    url = os.environ.get("PREFECT_API_URL", args.api_url)
    check_server(url)
    checked_params(Path(args.root) / "params.yaml")
    os.environ["PREFECT_API_URL"] = url  # only once the server answers: a refused serve leaves the env as it was
    if args.verbose:
        os.environ[faults.VERBOSE_ENV] = "1"  # the flow runs' processes inherit it
    from prefect import serve

    from pipeline.flows import deployments

    faults.quiet_console()
    root = str(Path(args.root).resolve())
    print(
        f"cfdg: serving deployments cfdg-run/cfdg-run and cfdg-round/cfdg-round for {root}",
        f"at {os.environ['PREFECT_API_URL']}",
    )
    faults.watch_server(url, what="serve")
    serve(*deployments(root))
    return 0


class ServerError(CfdgError):
    """No Prefect server answers at the API URL."""


def check_server(api_url: str, timeout: float = 3.0) -> None:
    """One line, not Prefect's connection traceback, when nothing answers at `api_url`."""
    reason = faults.health(api_url, timeout)
    if reason is not None:
        raise ServerError(
            f"no Prefect server at {api_url} ({reason}); start `cfdg server` first (or set PREFECT_API_URL)"
        )


def _cmd_server(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", args.host, "--port", str(args.port)]
    os.execv(sys.executable, argv)  # env defaults above (telemetry off) are inherited
    return 0


def _cmd_preset(args: argparse.Namespace) -> int:
    out = apply_preset(args.preset, args.params, args.rounds)
    print(f"cfdg: applied {args.preset} to {out}")
    return 0


def checked_params(path: str | Path) -> sections.Params:
    """Every section of params.yaml and `dataset.source` validated: what check, run and round do first."""
    from cfdg.sources import check_source

    p = sections.load_all(path)
    try:
        check_source(p.source, Path(path).parent)
    except CfdgError as e:
        raise ConfigError(f"{Path(path).name}:dataset.source: {e}") from None
    return p


def _cmd_check(args: argparse.Namespace) -> int:
    from cfdg.sources import checked_what

    p = checked_params(args.params)
    if args.resolved:
        flat = sections.resolved(p)
        print(yaml.safe_dump(flat, sort_keys=False, allow_unicode=True, default_flow_style=None), end="")
        return 0
    looked = checked_what(p.source, Path(args.params).parent)
    print(f"{args.params}: valid; seed {p.seed}, dataset source {p.source!r} ({looked}), {len(p.rounds)} round(s)")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    return table_main(args.summaries, args.out)


VERBOSE_HELP = "print a failed stage's traceback and Prefect's own failure reports too (docs/faults.md)"


def register_loop(sub: argparse._SubParsersAction) -> None:
    """run, round, serve, server, preset, check, table."""
    p = sub.add_parser("run", help="run the whole loop now (no server needed) and print where the report is")
    p.add_argument("--root", default=".", help="project root holding dvc.yaml and params.yaml")
    p.add_argument(
        "--retries", type=int, default=1, help="retries of a stage that failed in a way a retry may cure (default 1)"
    )
    p.add_argument("--verbose", "-v", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("round", help="run (or redo) one generation round k: rollout, fit, materialise")
    p.add_argument("k", type=int)
    p.add_argument("--root", default=".")
    p.add_argument("--retries", type=int, default=1)
    p.add_argument("--verbose", "-v", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(func=_cmd_round)

    p = sub.add_parser("serve", help="register the deployments with a Prefect server and run them on request")
    p.add_argument("--root", default=".")
    p.add_argument("--api-url", default=LOCAL_API, help=f"Prefect API (default {LOCAL_API}; PREFECT_API_URL wins)")
    p.add_argument("--verbose", "-v", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("server", help="start a local Prefect server (telemetry off)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4200)
    p.set_defaults(func=_cmd_server)

    p = sub.add_parser("preset", help="merge a preset into params.yaml")
    p.add_argument("preset", help="e.g. configs/paper/iql.yaml or configs/tiny.yaml")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--rounds", type=int, help="number of rounds (overrides the preset's)")
    p.set_defaults(func=_cmd_preset)

    p = sub.add_parser("check", help="validate params.yaml")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--resolved", action="store_true", help="print every effective setting, defaults included, as YAML")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("table", help="Table 1 (base vs CFDG, mean ± std over seeds) from runs' summary.json")
    p.add_argument("summaries", nargs="+")
    p.add_argument("--out")
    p.set_defaults(func=_cmd_table)


def add_pipeline_commands(sub: argparse._SubParsersAction) -> None:
    """Register the pipeline's sub-commands on `sub`; a new command module adds its line here."""
    register_loop(sub)
    register_study(sub)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = new_parser("cfdg")
    add_pipeline_commands(sub)
    add_library_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return dispatch(build_parser(), argv)
    finally:
        runlock.release_all()  # an emptied lock file: this command ended, it did not die


if __name__ == "__main__":
    sys.exit(main())
