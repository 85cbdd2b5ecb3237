"""The README, docs/ and results/ say what the code does: links resolve inside the repository, the
README's and docs' tables list exactly the registered variants and agents, docs/configuration.md
names every params key, docs/pipeline.md every metrics file, and results/ is indexed with the
provenance of each measurement."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pipeline_project import ROOT

from cfdg.agents.registry import AGENTS, algos_reading
from cfdg.diffusion.variants.registry import VARIANTS
from pipeline import sections

# Pages other branches write at the same time; a link to them may dangle until they are merged.
PENDING = {"docs/paper-settings.md", "docs/faults.md"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
COMMIT = re.compile(r"\b[0-9a-f]{7,40}\b")


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
    return files + sorted((ROOT / "results").rglob("*.md"))


def prose(path: Path) -> str:
    """The file without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def table(text: str, heading: str) -> list[dict[str, str]]:
    """The first table after `heading` as rows of {column: cell} (cells stripped, backticks kept)."""
    body = text.split(heading, 1)[1]
    lines = []
    for line in body.splitlines()[1:]:
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def code(cell: str) -> str:
    match = re.match(r"`([^`]+)`", cell)
    assert match, f"expected a `name` in {cell!r}"
    return match.group(1)


def test_links_resolve_inside_the_repository():
    bad = []
    for path in markdown_files():
        for target in LINK.findall(prose(path)):
            if re.match(r"[a-z]+://|mailto:|#", target):
                continue
            resolved = (path.parent / target.split("#")[0]).resolve()
            rel = resolved.relative_to(ROOT.resolve()).as_posix() if resolved.is_relative_to(ROOT.resolve()) else None
            if rel is None:
                bad.append(f"{path.relative_to(ROOT)}: {target} points outside the repository")
            elif not resolved.exists() and rel not in PENDING:
                bad.append(f"{path.relative_to(ROOT)}: {target} does not exist")
    assert not bad, bad


def test_no_doc_points_outside_the_repository():
    outside = re.compile(r"/work/|\.\./shared|shared/paper")
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in markdown_files() for m in outside.finditer(p.read_text())]
    assert not hits, hits


def test_readme_and_docs_hold_no_lab_notebook():
    """Measurements and their history live in results/: no issue numbers or load averages in the docs."""
    notebook = re.compile(r"\bissue \d+|load average", re.I)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in pages for m in notebook.finditer(p.read_text())]
    assert not hits, hits


def test_readme_is_short():
    """≈ 200 lines for a newcomer (the paper-settings table, when it is still here, not counted)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("### Paper settings")]
    if starts:
        end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[: starts[0]] + lines[end:]
    assert len(lines) <= 220, len(lines)


def _fitted_on(cell: str) -> tuple[str, ...]:
    if cell.startswith("–"):
        return ()
    return ("offline", "online") if "offline ∪ online" in cell else ("online",)


@pytest.mark.parametrize(
    ("page", "heading", "fitted"),
    [
        ("README.md", "## Generator variants", "model fitted on"),
        ("docs/variants.md", "# Generator variants", "model fitted on"),
    ],
)
def test_variant_tables_list_the_registry(page, heading, fitted):
    rows = table((ROOT / page).read_text(), heading)
    names = [code(row["variant"]) for row in rows]
    assert names == list(VARIANTS), f"{page}: {names} != registry {list(VARIANTS)}"
    for row in rows:
        cls = VARIANTS[code(row["variant"])]
        expected = cls.trains_on if cls.fits_model else ()
        assert _fitted_on(row[fitted]) == expected, (page, row)
    if page == "docs/variants.md":
        assert [row["reports call it"] for row in rows] == [cls.display_name for cls in VARIANTS.values()]


@pytest.mark.parametrize(
    ("page", "heading", "paradigm"),
    [("README.md", "## Agents", "batches (paper 2.2, 3.3)"), ("docs/agents.md", "# Agents", "paradigm")],
)
def test_agent_tables_list_the_registry(page, heading, paradigm):
    rows = table((ROOT / page).read_text(), heading)
    names = [code(row["`agent.algo`"]) for row in rows]
    assert names == list(AGENTS), f"{page}: {names} != registry {list(AGENTS)}"
    for row in rows:
        cls = AGENTS[code(row["`agent.algo`"])]
        assert row[paradigm].startswith(cls.paradigm), (page, row)
        if "online buffer" in row:
            size = cls.online_buffer
            assert ("every online row" in row["online buffer"]) == (size is None), row
            assert size is None or f"{size // 1000}K" in row["online buffer"], row


def _keys(cls: type, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for field in dataclasses.fields(cls):
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default):
            out |= _keys(type(default), f"{prefix}{field.name}.")
        else:
            out.add(prefix + field.name)
    return out


def test_configuration_doc_names_every_key():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name, cls in sections.CONFIG_CLASSES.items():
        documented = {code(row["key"]) for row in table(text, f"### `{name}`")}
        expected = sections.section_keys(name) if name == "agent" else _keys(cls)  # agent: every agent's keys
        assert documented == expected, f"{name}: missing {expected - documented}, unknown {documented - expected}"


def test_configuration_doc_says_whose_config_holds_each_agent_key():
    for row in table((ROOT / "docs" / "configuration.md").read_text(), "### `agent`"):
        owners = algos_reading(code(row["key"]))
        assert row["config of"] == ("every agent" if owners == list(AGENTS) else ", ".join(owners)), row


def _metrics_paths() -> tuple[set[str], set[str]]:
    """(declared metrics, every other metrics.json output) of dvc.yaml, rounds as <k>."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    declared, outputs = set(), set()
    for stage in spec["stages"].values():
        body = stage.get("do", stage)
        declared |= {str(m).replace("${key}", "<k>") for m in body.get("metrics", [])}
        outputs |= {str(o).replace("${key}", "<k>") for o in body.get("outs", []) if str(o).endswith("metrics.json")}
    return declared, outputs


def test_pipeline_doc_lists_every_metrics_file():
    rows = table((ROOT / "docs" / "pipeline.md").read_text(), "## Metrics and plots")
    documented = {code(row["file (declared as metric?)"]): row for row in rows}
    declared, outputs = _metrics_paths()
    assert set(documented) == declared | outputs
    for path, row in documented.items():
        assert row["file (declared as metric?)"].endswith("(yes: the headline)") == (path in declared), row


def test_results_are_indexed_with_their_provenance():
    results = ROOT / "results"
    rows = table((results / "README.md").read_text(), "# Results")
    for row in rows:
        for column in ("Finding", "Commit", "Machine", "Date", "Command"):
            assert row[column], (column, row)
    where = " ".join(row["Where"] for row in rows)
    for entry in sorted(results.iterdir()):
        if entry.name != "README.md":
            assert f"{entry.name}/" in where or entry.name in where, f"results/{entry.name} is not indexed"
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("no git history to check the commits against")
    commits = {c for row in rows for c in COMMIT.findall(row["Commit"])}
    assert commits
    for commit in sorted(commits):
        found = subprocess.run([git, "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
        assert found.returncode == 0, f"results/README.md names commit {commit}, which this repository lacks"
