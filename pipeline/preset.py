"""`cfdg preset`: merge a preset (configs/*.yaml) into params.yaml, keeping its comments."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken

from cfdg.errors import ConfigError
from cfdg.io import atomic_write_text
from pipeline import sections
from stages import params


def _merge(dst: Any, src: Mapping[str, Any]) -> None:
    """Deep-merge `src` into the ruamel mapping `dst` in place (so params.yaml keeps its comments).

    New keys go after the existing ones and take over the blank line that closed the section;
    lists are written in flow style (`hidden_dims: [32, 32]`).
    """
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
            token.value = token.value.rstrip("\n") + "\n"
            if not token.value.strip():
                tokens[2] = None
            blank = CommentToken("\n", CommentMark(0), None)
            comments.items.setdefault(new_last, [None, None, None, None])[2] = blank


REPLACE_KEY = "replace_sections"


def replaced_sections(preset: Mapping[str, Any], where: str) -> set[str]:
    """Sections the preset replaces whole (`replace_sections: true`): every params section it names.

    A paper preset replaces its sections so that its outcome never depends on what params.yaml
    held before (a key it omits takes the dataclass default, not the embedded CPU run's value).
    """
    flag = preset.get(REPLACE_KEY, False)
    if not isinstance(flag, bool):
        raise ConfigError(f"{where}:{REPLACE_KEY}: must be true or false, got {flag!r}")
    if not flag:
        return set()
    return {k for k, v in preset.items() if k in params.SECTIONS and isinstance(v, Mapping)}


def apply_preset(preset: str | Path, target: str | Path = "params.yaml", rounds: int | None = None) -> Path:
    """Merge `preset` into `target` (a params.yaml); `rounds: N` (in the preset or given) becomes the rounds table."""
    preset, target = Path(preset), Path(target)
    if not preset.is_file():
        raise ConfigError(f"{preset}: preset not found")
    data = yaml.safe_load(preset.read_text()) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{preset}: must be a mapping of params.yaml sections")
    data = sections.renamed(data, str(preset))  # old key names: one warning, written under the new
    replace = replaced_sections(data, str(preset))
    data.pop(REPLACE_KEY, None)
    n = rounds if rounds is not None else data.pop("rounds", None)
    data.pop("rounds", None)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise ConfigError(f"{preset}:rounds: must be the number of rounds (an integer), got {n!r}")
        data["rounds"] = params.rounds_table(n)
    ry = YAML()
    ry.preserve_quotes = True
    doc = ry.load(target.read_text())
    for name in replace:
        if name in doc:
            doc[name] = CommentedMap()
    _merge(doc, data)
    if "rounds" in data:
        table = CommentedMap()
        for key, item in data["rounds"].items():
            table[key] = CommentedMap(item)
            table[key].fa.set_flow_style()  # `"2": {prev: 1}`, one line per round
        doc["rounds"] = table
    buf = io.StringIO()
    ry.dump(doc, buf)
    tmp_check = yaml.safe_load(buf.getvalue())
    params.rounds(tmp_check, target)
    atomic_write_text(target, buf.getvalue())
    return target
