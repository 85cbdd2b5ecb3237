"""`python -m pipeline run | serve | server | preset | check | table`.

run     the whole loop now, in this process (Prefect ephemeral mode, no server needed)
server  start a local Prefect server with telemetry off (UI at http://127.0.0.1:4200)
serve   register the `cfdg-run` and `cfdg-round` deployments with that server and run them
        when asked (from the UI, `prefect deployment run`, or a retry of a failed flow run)
preset  merge a preset (configs/*.yaml) into params.yaml, keeping comments
check   validate every section of params.yaml
table   the paper's Table 1 from several runs' summary.json files
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (environment defaults before prefect is imported)
from cfdg.cli import dispatch
from cfdg.errors import ConfigError

LOCAL_API = "http://127.0.0.1:4200/api"
RERUN_HINT = (
    "pipeline: finished stages are kept; after fixing the cause rerun `python -m pipeline run` "
    "(or `dvc repro`): it redoes only the failed stage and what follows."
)


def _merge(dst: Any, src: Mapping[str, Any]) -> None:
    """Deep-merge `src` into the ruamel mapping `dst` in place (so params.yaml keeps its comments).

    New keys go after the existing ones and take over the blank line that closed the section;
    lists are written in flow style (`hidden_dims: [32, 32]`).
    """
    from ruamel.yaml.comments import CommentedSeq

    last = next(reversed(dst), None) if len(dst) else None
    for key, value in src.items():
        if isinstance(value, Mapping) and isinstance(dst.get(key), Mapping):
            _merge(dst[key], value)
            continue
        if isinstance(value, list):
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        dst[key] = value
    new_last = next(reversed(dst), None) if len(dst) else None
    comments = getattr(dst, "ca", None)
    if comments is not None and last is not None and new_last != last and last in comments.items:
        tokens = comments.items[last]
        token = tokens[2] if len(tokens) > 2 else None
        if token is not None and token.value.endswith("\n\n"):
            from ruamel.yaml.error import CommentMark
            from ruamel.yaml.tokens import CommentToken

            token.value = token.value.rstrip("\n") + "\n"
            if not token.value.strip():
                tokens[2] = None
            blank = CommentToken("\n", CommentMark(0), None)
            comments.items.setdefault(new_last, [None, None, None, None])[2] = blank


def apply_preset(preset: str | Path, params: str | Path = "params.yaml", rounds: int | None = None) -> Path:
    """Merge `preset` into `params`; `rounds: N` (in the preset or given) becomes the rounds table."""
    import io

    import yaml
    from ruamel.yaml import YAML

    from cfdg.io import atomic_write_text
    from stages import params as P

    preset, params = Path(preset), Path(params)
    if not preset.is_file():
        raise ConfigError(f"{preset}: preset not found")
    data = yaml.safe_load(preset.read_text()) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{preset}: must be a mapping of params.yaml sections")
    data = dict(data)
    n = rounds if rounds is not None else data.pop("rounds", None)
    data.pop("rounds", None)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise ConfigError(f"{preset}:rounds: must be the number of rounds (an integer), got {n!r}")
        data["rounds"] = P.rounds_table(n)
    ry = YAML()
    ry.preserve_quotes = True
    doc = ry.load(params.read_text())
    _merge(doc, data)
    if "rounds" in data:
        from ruamel.yaml.comments import CommentedMap

        table = CommentedMap()
        for key, item in data["rounds"].items():
            table[key] = CommentedMap(item)
            table[key].fa.set_flow_style()  # `"2": {prev: 1}`, one line per round
        doc["rounds"] = table
    buf = io.StringIO()
    ry.dump(doc, buf)
    tmp_check = yaml.safe_load(buf.getvalue())
    P.rounds(tmp_check, params)
    atomic_write_text(params, buf.getvalue())
    return params


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.flows import StageFailed, cfdg_run

    try:
        report = cfdg_run(root=str(Path(args.root).resolve()), retries=args.retries)
    except StageFailed as e:
        print(f"pipeline: {e}", file=sys.stderr)
        print(RERUN_HINT, file=sys.stderr)
        return 1
    print(f"cfdg: report written to {report}")
    return 0


def _cmd_round(args: argparse.Namespace) -> int:
    from pipeline.flows import StageFailed, cfdg_round

    try:
        row = cfdg_round(args.k, root=str(Path(args.root).resolve()), retries=args.retries)
    except StageFailed as e:
        print(f"pipeline: {e}", file=sys.stderr)
        print(RERUN_HINT, file=sys.stderr)
        return 1
    print(json.dumps(row))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("PREFECT_API_URL", args.api_url)
    from prefect import serve

    from pipeline.flows import deployments

    root = str(Path(args.root).resolve())
    print(
        f"cfdg: serving deployments cfdg-run/cfdg-run and cfdg-round/cfdg-round for {root}",
        f"at {os.environ['PREFECT_API_URL']}",
    )
    serve(*deployments(root))
    return 0


def _cmd_server(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", args.host, "--port", str(args.port)]
    os.execv(sys.executable, argv)  # env defaults above (telemetry off) are inherited
    return 0


def _cmd_preset(args: argparse.Namespace) -> int:
    out = apply_preset(args.preset, args.params, args.rounds)
    print(f"cfdg: applied {args.preset} to {out}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from stages import params as P

    p = P.load_all(args.params)
    print(f"{args.params}: valid; seed {p.seed}, dataset source {p.source!r}, {len(p.rounds)} round(s)")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from stages.report import table_main

    return table_main(args.summaries, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the whole loop now (no server needed) and print where the report is")
    p.add_argument("--root", default=".", help="project root holding dvc.yaml and params.yaml")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed stage before the run fails")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("round", help="run (or redo) one generation round k: rollout, fit, materialise")
    p.add_argument("k", type=int)
    p.add_argument("--root", default=".")
    p.add_argument("--retries", type=int, default=1)
    p.set_defaults(func=_cmd_round)

    p = sub.add_parser("serve", help="register the deployments with a Prefect server and run them on request")
    p.add_argument("--root", default=".")
    p.add_argument("--api-url", default=LOCAL_API, help=f"Prefect API (default {LOCAL_API}; PREFECT_API_URL wins)")
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
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("table", help="Table 1 (base vs CFDG, mean ± std over seeds) from runs' summary.json")
    p.add_argument("summaries", nargs="+")
    p.add_argument("--out")
    p.set_defaults(func=_cmd_table)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
