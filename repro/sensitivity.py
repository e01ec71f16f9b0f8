"""Protocol sensitivity: how far each protocol choice moves FID and FVD, for one or several
generated sets scored against the same reference (`repro eval-sensitivity`).

`score_variants` scores a set under every variant of `SENSITIVITY_VARIANTS` (the base
protocol first); `page_markdown` writes the short results page: per variant and set, FID and
FVD with their change from the base protocol, the largest moves, and provenance (git commit,
protocol and hash, detector weights' SHA-256 or the random-weights label, sample counts).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

SENSITIVITY_VARIANTS = (
    ("base protocol", {}),
    ("FVD on the first 16 frames", {"fvd.num_frames": 16}),
    ("condition frames excluded from FVD", {"fvd.first_frame": "cond"}),
    ("condition frames counted for FID", {"fid.exclude_cond_frames": "flip"}),
    ("FID resize swapped (tf <-> torch bilinear)", {"fid.resize": "swap"}),
    ("FVD resize swapped (tf <-> torch bilinear)", {"fvd.resize": "swap"}),
    ("centre crop to a square before resizing", {"fid.crop": "center", "fvd.crop": "center"}),
    ("FVD detector: StyleGAN-V TorchScript I3D", {"fvd.detector": "i3d-torchscript"}),
)
SKIPPED = "skipped: needs the real TorchScript file"


def variant(protocol, changes: dict):
    resolved = {}
    for key, value in changes.items():
        section, name = key.split(".")
        current = getattr(getattr(protocol, section), name)
        if value == "swap":
            value = "torch_bilinear" if current == "tf_bilinear" else "tf_bilinear"
        elif value == "flip":
            value = not current
        elif value == "cond":
            value = protocol.cond_frames
        resolved[key] = value
    return protocol.replace(**resolved)


def score_variants(base, generated: Path, reference: Path, out: Path, weights: Path | None,
                   cache_dir: str | None, device: str, extractors, echo=print
                   ) -> dict[str, Any]:
    """{"rows": [{label, hash, fid, fvd, d_fid, d_fvd} or {label, skipped}], "meta": {...}}"""
    from evals.evaluate import evaluate
    from evals.extractors import rebind
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    base_values = None
    for label, changes in SENSITIVITY_VARIANTS:
        if changes.get("fvd.detector") == "i3d-torchscript" and weights is None:
            rows.append({"label": label, "skipped": SKIPPED})
            continue
        protocol = variant(base, changes)
        try:
            protocol.validate()
        except ValueError as err:      # e.g. 16 FVD frames of an 8-frame protocol
            rows.append({"label": label, "skipped": f"does not apply ({err})"})
            continue
        same = protocol.fvd.detector == base.fvd.detector
        result = evaluate(protocol, generated, reference, out.with_suffix(
            f".{protocol.hash}.json"), weights_dir=weights, cache_dir=cache_dir, device=device,
            progress=False, extractors=rebind(extractors, protocol) if same else None)
        point = result["points"][0]
        values = (point["fid"]["value"], point["fvd"]["value"])
        base_values = base_values or values
        if not meta:
            meta = {"label": result.get("label") or "", "n_clips": result["n_clips"],
                    "fid_n": point["fid"]["n"], "fvd_n": point["fvd"]["n"],
                    "detectors": {d["role"]: d.get("weights_sha256") or "random-weights"
                                  for d in result["detectors"]}}
        rows.append({"label": label, "hash": protocol.hash, "fid": values[0],
                     "fvd": values[1], "d_fid": values[0] - base_values[0],
                     "d_fvd": values[1] - base_values[1]})
        echo(f"{generated}: {label}: FID {values[0]:.2f}, FVD {values[1]:.2f}")
    return {"rows": rows, "meta": meta}


def table_markdown(base, generated: str, reference: str, scored: dict[str, Any]) -> str:
    """The one-set table (`--out`)."""
    label = scored["meta"].get("label", "")
    lines = [f"# Protocol sensitivity: {base.name}", "",
             f"generated `{generated}`, reference `{reference}`"
             + (f"; **{label}**" if label else ""), "",
             "| variant | protocol hash | FID | FVD | Δ FID | Δ FVD |",
             "|---|---|---|---|---|---|"]
    for row in scored["rows"]:
        lines.append(f"| {row['label']} | {row['skipped']} | | | | |" if "skipped" in row else
                     f"| {row['label']} | {row['hash']} | {row['fid']:.2f} | {row['fvd']:.2f} "
                     f"| {row['d_fid']:+.2f} | {row['d_fvd']:+.2f} |")
    return "\n".join(lines) + "\n"


def page_markdown(base, reference: str, sets: dict[str, dict[str, Any]], commit: str,
                  command: str, title: str | None = None, banner: str | None = None) -> str:
    """The results page: every variant x set, the largest moves, provenance."""
    names = list(sets)
    lines = [f"# {title or f'How far protocol choices move FID and FVD ({base.name})'}", ""]
    if banner:
        lines += [f"> **{banner}**", ""]
    header = ["protocol choice"]
    for name in names:
        header += [f"{name}: FID (Δ)", f"{name}: FVD (Δ)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (label, _) in enumerate(SENSITIVITY_VARIANTS):
        cells = [label]
        for name in names:
            row = sets[name]["rows"][i]
            cells += [row["skipped"], ""] if "skipped" in row else [
                f"{row['fid']:.2f} ({row['d_fid']:+.2f})",
                f"{row['fvd']:.2f} ({row['d_fvd']:+.2f})"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Largest moves from the base protocol:", ""]
    for name in names:
        scored = [r for r in sets[name]["rows"][1:] if "skipped" not in r]
        if scored:
            fid = max(scored, key=lambda r: abs(r["d_fid"]))
            fvd = max(scored, key=lambda r: abs(r["d_fvd"]))
            lines.append(f"- {name}: FID {fid['d_fid']:+.2f} ({fid['label']}); "
                         f"FVD {fvd['d_fvd']:+.2f} ({fvd['label']})")
    lines += ["", "## Provenance", "",
              f"- git commit: `{commit}`",
              f"- base protocol: `{base.name}` (hash `{base.hash}`); each variant's hash is in "
              "the per-set tables (`--out`) and result files",
              f"- reference: `{reference}`"]
    for name in names:
        meta = sets[name]["meta"]
        detectors = ", ".join(f"{role}: {value}" for role, value in meta["detectors"].items())
        lines.append(f"- {name}: `{sets[name]['path']}`; {meta['n_clips']} clips, FID on "
                     f"{meta['fid_n']} frames, FVD on {meta['fvd_n']} videos; detectors "
                     f"{detectors}" + (f" (**{meta['label']}**)" if meta["label"] else ""))
    lines += ["", "Command:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"
