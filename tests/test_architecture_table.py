"""ARCHITECTURE.md's paper → code table: every row names a function that exists and a params key
that the config accepts, so a rename or a moved function that forgets the table fails here."""

from __future__ import annotations

import copy
import importlib
import re

import pytest
from pipeline_project import ROOT

from cfdg.agents.registry import algos_reading
from cfdg.config import to_dict
from cfdg.errors import ConfigError
from pipeline import sections
from stages import params

HEADING = "## Paper → code"


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of the table under HEADING as {column: cell}, backticks stripped."""
    body = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip().strip("`") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def resolve_function(ref: str):
    """`package.module:Qual.name` -> the object; raises if the module or an attribute is missing."""
    module, _, qualname = ref.partition(":")
    assert module and qualname, f"{ref!r}: expected module:qualname"
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    assert callable(obj), f"{ref} is not a function or class"
    return obj


def accept_key(key: str, raw: dict) -> object:
    """The effective value of `key` in `raw`; raises unless params validation knows the key and accepts
    it written out explicitly (the way a params.yaml or a preset would set it)."""
    if key in ("seed", "rounds"):
        assert key in params.TOP_LEVEL
        return sections.resolved(sections.validate(raw))[key]
    section, _, rest = key.partition(".")
    if section == "agent":  # an agent key resolves as the first agent whose config holds it gets it
        readers = algos_reading(rest)
        if not readers:
            raise KeyError(key)
        if raw.get("agent", {}).get("algo") not in readers:
            raw = {**raw, "agent": {**raw.get("agent", {}), "algo": readers[0]}}
    cfg = sections.validate(raw).sections[section]  # KeyError: not a section
    value = to_dict(cfg)
    for part in rest.split("."):
        value = value[part]  # KeyError: the section has no such key
    written = copy.deepcopy(raw)
    target = written.setdefault(section, {})
    *parents, leaf = rest.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value
    sections.validate(written)  # ConfigError: the key is not accepted
    return value


@pytest.fixture(scope="module")
def rows():
    return table_rows((ROOT / "ARCHITECTURE.md").read_text())


@pytest.fixture(scope="module")
def raw():
    return params.read_params(ROOT / "params.yaml")


def test_the_table_covers_the_papers_equations_and_algorithm(rows):
    assert len(rows) >= 20
    equations: set[int] = set()
    for row in rows:
        for first, last in re.findall(r"Eq\. (\d+)(?:-(\d+))?", row["paper"]):
            equations |= set(range(int(first), int(last or first) + 1))
    assert equations >= set(range(1, 8)), sorted(equations)
    assert sum(row["paper"].startswith("Alg. 1") for row in rows) >= 5


def test_every_row_names_a_function_that_exists(rows):
    missing = []
    for row in rows:
        try:
            resolve_function(row["function"])
        except (ImportError, AttributeError, AssertionError) as e:
            missing.append(f"{row['paper']}: {row['function']} ({type(e).__name__}: {e})")
    assert not missing, missing


def test_every_row_names_a_key_the_config_accepts(rows, raw):
    bad = []
    for row in rows:
        try:
            accept_key(row["params key"], raw)
        except (KeyError, ConfigError, AssertionError) as e:
            bad.append(f"{row['paper']}: {row['params key']} ({type(e).__name__}: {e})")
    assert not bad, bad


def test_the_checks_catch_a_wrong_row(raw):
    """The two checks above fail on a function or key that does not exist."""
    with pytest.raises(AttributeError):
        resolve_function("cfdg.diffusion.edm:guided_denoise_v2")
    with pytest.raises(ImportError):
        resolve_function("cfdg.diffusion.nowhere:guided_denoise")
    with pytest.raises(KeyError):
        accept_key("sampling.guidance", raw)
    with pytest.raises(KeyError):
        accept_key("sampler.guidance_w", raw)
    assert accept_key("sampling.edis.state", raw) == 2.0
    assert accept_key("diffusion.width", raw) == raw["diffusion"]["width"]
