"""A study file (configs/study/*.yaml) as a validated list of cells, before anything runs.

A study is a grid of runs of the one pipeline: axes (dataset, algo, variant, seed) and named
ablations, each cell a full params.yaml. Everything a user can get wrong (an unknown axis, an
override key that params.yaml does not have, two cells that are the same, a cell whose params
fail validation) is found here, so `study run` fails in a second with one line instead of after
an hour of cells.

Layers, later wins: the project's params.yaml, the study's `preset`, the study's `params`, the
grid's `preset` and `params`, each axis value (dataset, algo, variant, seed), the ablation.
A layer may hold `preset: FILE` (a partial params.yaml, merged first) and `rounds: N`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cfdg.errors import CfdgError, ConfigError
from cfdg.sources import check_source
from pipeline import sections
from pipeline.preset import REPLACE_KEY, replaced_sections
from stages import params as params_yaml

AXES = ("dataset", "algo", "variant", "seed")
# What a plain axis value sets: `algo: [iql, pex]` means agent.algo.
AXIS_KEYS: dict[str, tuple[str, ...]] = {
    "dataset": ("dataset", "source"),  # a plain dataset value is a D4RL name or HDF5 path
    "algo": ("agent", "algo"),
    "variant": ("diffusion", "variant"),
    "seed": ("seed",),
}
STUDY_KEYS = ("name", "description", "preset", "rounds", "params", "axes", "ablations", "ablation_axes", "grids")
GRID_KEYS = ("name", "preset", "rounds", "params", "axes", "ablations", "ablation_axes")
# Ablations are CFDG with one thing changed (the paper's Table 3).
ABLATION_BASE_VARIANT = "cfdg"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the pipeline: its place in the grid and its full params.yaml."""

    name: str
    grid: str
    dataset: str
    algo: str
    variant: str  # the diffusion variant the cell runs, or the ablation's name
    seed: int
    ablation: str | None
    params: dict[str, Any]

    @property
    def params_yaml(self) -> str:
        return yaml.safe_dump(self.params, sort_keys=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.params_yaml.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    path: Path
    description: str
    cells: tuple[Cell, ...]

    def cell(self, name: str) -> Cell:
        for c in self.cells:
            if c.name == name:
                return c
        raise ConfigError(f"{self.path}: no cell named {name!r}")


def slug(text: str) -> str:
    """A file- and Prefect-safe name part."""
    return _SAFE.sub("-", str(text)).strip("-") or "x"


def artifact_key(text: str) -> str:
    """A Prefect artifact key (lower case, digits and dashes, at most 100) from a study or cell name."""
    return slug(text).lower().replace(".", "-").replace("_", "-")[:100]


def deep_merge(dst: dict[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in src.items():
        if isinstance(value, Mapping) and isinstance(dst.get(key), Mapping):
            dst[key] = deep_merge(dict(dst[key]), value)
        else:
            dst[key] = copy.deepcopy(value)
    return dst


def _known_keys(section: str) -> set[str] | None:
    """Keys a params section accepts (None: a scalar top-level key such as `seed`)."""
    if section not in params_yaml.SECTIONS:
        return None
    keys = sections.section_keys(section)
    if section == "dataset":
        keys.add(params_yaml.DATASET_SOURCE_KEY)
    return keys


def check_overrides(overrides: Mapping[str, Any], where: str) -> None:
    """Every key of an override layer must exist in params.yaml's schema; name the first that does not."""
    for section, value in overrides.items():
        if section in ("preset", REPLACE_KEY):
            continue
        if section not in params_yaml.TOP_LEVEL:
            known = list(params_yaml.TOP_LEVEL)
            raise ConfigError(f"{where}: {section!r} is not a params.yaml section; known: {known}")
        if section == "rounds":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.rounds: must be the number of rounds (an integer >= 1), got {value!r}")
            continue
        keys = _known_keys(section)
        if keys is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}.{section}: must be a mapping of {section} keys, got {value!r}")
        for key in value:
            if key not in keys:
                raise ConfigError(f"{where}: {section}.{key} is not a params key (known in {section}: {sorted(keys)})")


class _Resolver:
    """Applies override layers to a params mapping; presets are read once."""

    def __init__(self, root: Path, study_path: Path):
        self.root = root
        self.study_path = study_path
        self._presets: dict[str, dict[str, Any]] = {}

    def preset(self, name: Any, where: str) -> dict[str, Any]:
        if not isinstance(name, str):
            raise ConfigError(f"{where}.preset: must be a path to a preset file, got {name!r}")
        if name not in self._presets:
            path = self.root / name
            if not path.is_file():
                raise ConfigError(f"{where}.preset: {name} not found (relative to {self.root})")
            data = yaml.safe_load(path.read_text()) or {}
            if not isinstance(data, Mapping):
                raise ConfigError(f"{where}.preset: {name} must be a mapping of params.yaml sections")
            data = sections.renamed(data, name)
            check_overrides(data, f"{name}")
            self._presets[name] = data
        return self._presets[name]

    def apply(self, params: dict[str, Any], layer: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
        if not layer:
            return params
        if not isinstance(layer, Mapping):
            raise ConfigError(f"{where}: must be a mapping of params.yaml sections, got {layer!r}")
        layer = sections.renamed(layer, where)  # old key names: one warning, new names in the cells
        check_overrides(layer, where)
        if "preset" in layer:
            params = self.apply(params, self.preset(layer["preset"], where), f"{where}.preset")
        rest = {k: v for k, v in layer.items() if k not in ("preset", REPLACE_KEY)}
        for name in replaced_sections(layer, where):
            params[name] = {}
        if "rounds" in rest:
            params["rounds"] = params_yaml.rounds_table(int(rest.pop("rounds")))
        return deep_merge(params, rest)


def _axis_values(axes: Mapping[str, Any], where: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """axis -> [(value name, override layer)]; plain values set the axis' own key."""
    if not isinstance(axes, Mapping):
        raise ConfigError(f"{where}: must be a mapping of axes {list(AXES)}")
    unknown = [a for a in axes if a not in AXES]
    if unknown:
        raise ConfigError(f"{where}: unknown axis {unknown[0]!r}; axes are {list(AXES)}")
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for axis in AXES:
        raw = axes.get(axis)
        if raw is None:
            out[axis] = [("", {})]  # not varied: whatever the layers below say
            continue
        items: list[tuple[str, Any]]
        if isinstance(raw, Mapping):
            items = list(raw.items())
        elif isinstance(raw, list) and raw:
            items = [(v, None) for v in raw]
        else:
            raise ConfigError(f"{where}.{axis}: must be a non-empty list or a mapping name -> overrides, got {raw!r}")
        values = []
        for name, layer in items:
            if isinstance(name, Mapping | list) or name is None:
                raise ConfigError(f"{where}.{axis}: a value must be a name, got {name!r}")
            if layer is None:
                layer = _plain(axis, name)
            elif not isinstance(layer, Mapping):
                raise ConfigError(f"{where}.{axis}.{name}: must be a mapping of params overrides, got {layer!r}")
            values.append((str(name), dict(layer)))
        out[axis] = values
    return out


def _plain(axis: str, value: Any) -> dict[str, Any]:
    keys = AXIS_KEYS[axis]
    layer: dict[str, Any] = {}
    node = layer
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return layer


def _grids(doc: Mapping[str, Any], where: str) -> list[tuple[str, Mapping[str, Any], str]]:
    if "grids" not in doc:
        return [("", doc, where)]
    grids = doc["grids"]
    if not isinstance(grids, list) or not grids:
        raise ConfigError(f"{where}.grids: must be a non-empty list of grids")
    out = []
    for i, g in enumerate(grids):
        gw = f"{where}.grids[{i}]"
        if not isinstance(g, Mapping):
            raise ConfigError(f"{gw}: must be a mapping")
        unknown = sorted(set(g) - set(GRID_KEYS))
        if unknown:
            raise ConfigError(f"{gw}: unknown key {unknown[0]!r}; known: {list(GRID_KEYS)}")
        out.append((str(g.get("name", f"grid{i}")), g, gw))
    return out


def load_study(
    path: str | Path,
    root: str | Path = ".",
    validate: bool = True,
    check_files: bool = True,
    base: Mapping[str, Any] | None = None,
) -> Study:
    """Read and expand a study file; every cell's params validated unless `validate` is False.

    `base` replaces the project's params.yaml as the bottom layer: `{}` gives each cell only what
    the study file (and the presets it names) pins, which is what a committed result must match.
    """
    root = Path(root)
    path = Path(path)
    file = path if path.is_absolute() else root / path
    if not file.is_file():
        raise ConfigError(f"{path}: study file not found")
    try:
        doc = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: must be a mapping with `axes` (or `grids`)")
    where = str(path)
    unknown = sorted(set(doc) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {list(STUDY_KEYS)}")
    if "axes" not in doc and "grids" not in doc:
        raise ConfigError(f"{where}: needs `axes` (or `grids`, a list of grids with their axes)")
    name = slug(doc.get("name") or file.stem)
    if base is None:
        base = sections.renamed(params_yaml.read_params(root / params_yaml.PARAMS_FILE), str(params_yaml.PARAMS_FILE))
    res = _Resolver(root, path)
    common = res.apply(copy.deepcopy(dict(base)), _layer(doc, where), where)

    cells: list[Cell] = []
    origin: dict[str, str] = {}
    for grid, g, gw in _grids(doc, where):
        grid_base = res.apply(copy.deepcopy(common), _layer(g, gw) if g is not doc else None, gw)
        axes = _axis_values(g.get("axes") or {}, f"{gw}.axes")
        for combo in itertools.product(*(axes[a] for a in AXES)):
            cells.append(_cell(res, grid, grid_base, dict(zip(AXES, combo, strict=True)), None, None, gw))
            origin.setdefault(cells[-1].name, gw)
        ablations = g.get("ablations") or {}
        if not isinstance(ablations, Mapping):
            raise ConfigError(f"{gw}.ablations: must be a mapping name -> params overrides")
        if ablations:
            given = g.get("ablation_axes") or {}
            if isinstance(given, Mapping) and "variant" in given:
                raise ConfigError(f"{gw}.ablation_axes: an ablation is its own variant; drop `variant`")
            narrowed = _axis_values(given, f"{gw}.ablation_axes")
            sub = {a: (narrowed[a] if a in given else axes[a]) for a in AXES}  # unnamed axes: the grid's
            for a in given:  # a plain name the grid's axis defines means that value, overrides and all
                named = dict(axes[a])
                if isinstance(given[a], list):
                    sub[a] = [(n, named[n]) if n in named else (n, layer) for n, layer in sub[a]]
            for ab_name, layer in ablations.items():
                if not isinstance(layer, Mapping) or not layer:
                    raise ConfigError(f"{gw}.ablations.{ab_name}: must be a non-empty mapping of params overrides")
                for combo in itertools.product(*(sub[a] for a in ("dataset", "algo", "seed"))):
                    picked = dict(zip(("dataset", "algo", "seed"), combo, strict=True))
                    picked["variant"] = (ABLATION_BASE_VARIANT, _plain("variant", ABLATION_BASE_VARIANT))
                    cells.append(_cell(res, grid, grid_base, picked, str(ab_name), dict(layer), f"{gw}.ablations"))
    _check_duplicates(cells, where)
    if validate:
        validate_cells(cells, where, check_files)
    return Study(name=name, path=path, description=str(doc.get("description", "")), cells=tuple(cells))


def study_pins(study: Study, root: str | Path = ".") -> dict[str, dict[str, Any]]:
    """cell name -> {dotted params key: value} for every setting the study file itself pins (its
    layers, axis values and the presets it names), whatever the project's params.yaml says."""
    bare = load_study(study.path, root, validate=False, base={})
    return {c.name: leaves(b.params) for c, b in zip(study.cells, bare.cells, strict=True)}


def leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values of nested mappings as dotted keys (lists are leaves; so is the whole `rounds`
    table, so a record with one round more than the study names is a mismatch)."""
    if not isinstance(obj, Mapping) or prefix == "rounds.":
        return {prefix[:-1]: obj}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out.update(leaves(v, f"{prefix}{k}."))
    return out


def _layer(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    if "preset" in doc:
        layer["preset"] = doc["preset"]
    params = doc.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}.params: must be a mapping of params.yaml sections, got {params!r}")
    layer.update(params)
    if "rounds" in doc:
        layer["rounds"] = doc["rounds"]
    return layer


def _cell(
    res: _Resolver,
    grid: str,
    base: dict[str, Any],
    picked: Mapping[str, tuple[str, dict[str, Any]]],
    ablation: str | None,
    ablation_layer: dict[str, Any] | None,
    where: str,
) -> Cell:
    params = copy.deepcopy(base)
    for axis in AXES:
        value, layer = picked[axis]
        params = res.apply(params, layer, f"{where}.axes.{axis}.{value}" if value else where)
    if ablation_layer:
        params = res.apply(params, ablation_layer, f"{where}.{ablation}")
    dataset = picked["dataset"][0] or str((params.get("dataset") or {}).get("source", "build"))
    if dataset == "build":
        ds = params.get("dataset") or {}
        dataset = f"{ds.get('env', 'hopper')}-{ds.get('kind', 'medium-replay')}"
    algo = str((params.get("agent") or {}).get("algo", "iql"))
    variant = str((params.get("diffusion") or {}).get("variant", "cfdg"))
    seed = params.get("seed", 0)
    label = ablation or variant
    name = "-".join(slug(x) for x in (Path(dataset).stem if "/" in dataset else dataset, algo, label)) + f"-s{seed}"
    return Cell(name, grid, dataset, algo, label, int(seed) if isinstance(seed, int) else -1, ablation, params)


def _check_duplicates(cells: Sequence[Cell], where: str) -> None:
    names: dict[str, Cell] = {}
    digests: dict[str, Cell] = {}
    for c in cells:
        if c.name in names:
            raise ConfigError(f"{where}: duplicate cell {c.name!r} (an axis value or ablation listed twice?)")
        if c.digest in digests:
            raise ConfigError(f"{where}: cells {digests[c.digest].name!r} and {c.name!r} have identical params")
        names[c.name] = c
        digests[c.digest] = c


def validate_cells(cells: Sequence[Cell], where: str, check_files: bool = True) -> None:
    """Every cell's params.yaml through `pipeline check`'s validation. `check_files=False` skips
    checking that a D4RL source file is present (to plan a GPU study on a machine without them)."""
    checked: dict[str, ConfigError | None] = {}
    with tempfile.TemporaryDirectory(prefix="cfdg-study-") as tmp:
        path = Path(tmp) / "params.yaml"
        for c in cells:
            path.write_text(c.params_yaml)
            try:
                raw = params_yaml.read_params(path)
                source = sections.validate(raw, path).source
                if check_files:
                    if source not in checked:
                        try:
                            check_source(source)
                            checked[source] = None
                        except CfdgError as e:
                            checked[source] = ConfigError(f"dataset.source: {e}")
                    if checked[source] is not None:
                        raise checked[source]
            except ConfigError as e:
                raise ConfigError(f"{where}: cell {c.name}: {e}") from None
