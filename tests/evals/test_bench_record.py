"""The committed evaluator benchmark record carries the required keys and its provenance."""
from __future__ import annotations

import json

from repro.paths import repo_root


def test_evals_benchmark_record():
    record = json.loads((repo_root() / "results" / "bench" / "evals.json").read_text())
    for key in ("frechet_speedup_vs_scipy_d2048", "pipeline_overhead_vs_detector",
                "scipy_version", "git_commit", "frechet_rel_diff", "inception_images_per_s",
                "i3d_clips_per_s"):
        assert key in record, key
    assert record["frechet_rel_diff"] < 1e-6
    assert len(record["git_commit"]) == 40
