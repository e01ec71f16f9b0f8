"""One record per scale (maskgwm/config/scales.py, scales.toml) says everything a scale decides;
no other module keeps its own table of scales."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from maskgwm.config import SCALES, ConfigError, get_scale
from maskgwm.config.scales import all_scales

ROOT = Path(__file__).resolve().parents[2]
SCALE_NAMES = set(SCALES)


def test_the_four_scales_and_what_they_decide():
    assert SCALES == ("ci", "smoke", "lite", "paper")
    assert [s.name for s in all_scales().values() if s.synthetic] == ["ci", "smoke"]
    assert [s.name for s in all_scales().values() if s.checked] == ["lite", "paper"]
    paper = get_scale("paper")
    assert (paper.sampling.steps, paper.sampling.guidance, paper.sampling.shards) == (30, 4.0, 32)
    assert paper.evalset is None and get_scale("ci").evalset.n_clips == 3
    assert (get_scale("lite").resources_from, get_scale("ci").resources_from) == ("paper", "smoke")
    assert get_scale("smoke").train["drop_checkpoints_when_done"] is True
    with pytest.raises(ConfigError, match="unknown scale 'huge'"):
        get_scale("huge")


def _scale_tables(path: Path) -> list[str]:
    """Literal collections naming two or more scales, and comparisons of a scale with one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else \
            node.keys if isinstance(node, ast.Dict) else []
        names = {i.value for i in items if isinstance(i, ast.Constant) and i.value in SCALE_NAMES}
        if len(names) >= 2:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(names)}")
        if isinstance(node, ast.Compare) and "scale" in ast.unparse(node.left) and any(
                isinstance(c, ast.Constant) and c.value in SCALE_NAMES
                for c in node.comparators):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    return found


def test_no_scale_table_outside_the_scale_record():
    record = ROOT / "maskgwm" / "config" / "scales.py"
    found = [hit for package in ("maskgwm", "evals", "repro")
             for path in sorted((ROOT / package).rglob("*.py")) if path != record
             for hit in _scale_tables(path)]
    assert found == []
