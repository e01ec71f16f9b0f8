"""Protocol sensitivity: how far each protocol choice, and the sampling guidance, move FID and
FVD, for one or several generated sets scored against the same reference
(`repro eval-sensitivity`).

`score_variants` scores a set under every variant of `SENSITIVITY_VARIANTS` (the base
protocol first); `score_guidance` adds a row per sampling guidance scale, the set regenerated
at that scale and scored under the base protocol (repro/commands/guidance.py);
`page_markdown` writes the short results page: per variant and set, FID and FVD with their
change from the base protocol, the largest moves, and provenance (git commit, protocol and hash, detector weights'
SHA-256 or the random-weights label, sample counts, each guidance row's sampling settings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.commands.guidance import guidance_label, guidance_rows, provenance_lines, regenerate

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


def score_protocol(protocol, generated: Path, reference: Path, result_path: Path,
                   weights: Path | None, cache_dir: str | None, device: str, extractors
                   ) -> dict[str, Any]:
    """evaluate() under `protocol`, reusing `extractors` (built for the base protocol) when
    the protocol keeps their detectors."""
    from evals.evaluate import evaluate
    from evals.extractors import rebind
    same = [protocol.fid.detector, protocol.fvd.detector] == [i.name for i in extractors[2]]
    return evaluate(protocol, generated, reference, result_path, weights_dir=weights,
                    cache_dir=cache_dir, device=device, progress=False,
                    extractors=rebind(extractors, protocol) if same else None)


def fid_fvd(result: dict[str, Any]) -> tuple[float, float]:
    point = result["points"][0]
    return point["fid"]["value"], point["fvd"]["value"]


def score_variants(base, generated: Path, reference: Path, out: Path, weights: Path | None,
                   cache_dir: str | None, device: str, extractors, echo=print
                   ) -> dict[str, Any]:
    """{"rows": [{label, hash, fid, fvd, d_fid, d_fvd} or {label, skipped}], "meta": {...}}"""
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
        result = score_protocol(protocol, generated, reference,
                                out.with_suffix(f".{protocol.hash}.json"), weights, cache_dir,
                                device, extractors)
        values = fid_fvd(result)
        base_values = base_values or values
        if not meta:
            meta = {"label": result.get("label") or "", "n_clips": result["n_clips"],
                    "fid_n": result["points"][0]["fid"]["n"],
                    "fvd_n": result["points"][0]["fvd"]["n"],
                    "detectors": {d["role"]: d.get("weights_sha256") or "random-weights"
                                  for d in result["detectors"]}}
        rows.append({"label": label, "hash": protocol.hash, "fid": values[0],
                     "fvd": values[1], "d_fid": values[0] - base_values[0],
                     "d_fvd": values[1] - base_values[1]})
        echo(f"{generated}: {label}: FID {values[0]:.2f}, FVD {values[1]:.2f}")
    return {"rows": rows, "meta": meta}


def score_guidance(base, plan, scales: tuple[float, ...], base_row: dict[str, Any],
                   generated: Path, reference: Path, stem: Path, weights: Path | None,
                   cache_dir: str | None, device: str, extractors, vae, echo=print
                   ) -> list[dict[str, Any]]:
    """The guidance rows of one set (repro/commands/guidance.py: `plan` from
    plan_regeneration): each scale's regenerated set scored under the base protocol, next to
    `base_row`."""
    def regenerate_at(guidance: float, folder: Path) -> Path:
        return regenerate(plan, guidance, folder, vae, device, log=echo)

    def score(folder: Path) -> tuple[float, float]:
        values = fid_fvd(score_protocol(base, folder, reference, folder.parent / (
            f"{folder.name}.{base.hash}.json"), weights, cache_dir, device, extractors))
        echo(f"{folder}: base protocol: FID {values[0]:.2f}, FVD {values[1]:.2f}")
        return values

    return guidance_rows(plan, scales, base_row, generated, stem, regenerate_at, score)


GUIDANCE_NOTE = ("Sampling guidance rows: the set regenerated at that classifier-free "
                 "guidance scale (guidance on the condition frames, text fixed: this suite's "
                 "reading of the paper's 4.0; Vista samples with 2.5), every other sampling "
                 "setting its own, scored under the base protocol; Δ is from the set's base "
                 "row. *as sampled*: the set's own scale, the set itself (not regenerated).")


def _cells(row: dict[str, Any] | None) -> list[str]:
    if row is None:
        return ["not measured", ""]
    if "skipped" in row:
        return [row["skipped"], ""]
    mark = " *as sampled*" if row.get("reused") else ""
    return [f"{row['fid']:.2f} ({row['d_fid']:+.2f}){mark}",
            f"{row['fvd']:.2f} ({row['d_fvd']:+.2f}){mark}"]


def table_markdown(base, generated: str, reference: str, scored: dict[str, Any]) -> str:
    """The one-set table (`--out`), with how its guidance rows were sampled."""
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
    if "guidance" in scored:
        lines += ["", GUIDANCE_NOTE, "",
                  *provenance_lines("this set", scored["rows"], scored["guidance"])]
    return "\n".join(lines) + "\n"


def _page_rows(sets: dict[str, dict[str, Any]]) -> list[tuple[str, list[dict | None]]]:
    """(row label, each set's row or None): the variants, then one row per guidance scale."""
    by_label = [{r["label"]: r for r in s["rows"] if "guidance" not in r} for s in sets.values()]
    by_scale = [{r["guidance"]: r for r in s["rows"] if "guidance" in r} for s in sets.values()]
    scales = dict.fromkeys(g for rows in by_scale for g in rows)
    return ([(label, [rows.get(label) for rows in by_label])
             for label, _ in SENSITIVITY_VARIANTS]
            + [(guidance_label(g), [rows.get(g) for rows in by_scale]) for g in scales])


def _largest_moves(name: str, rows: list[dict[str, Any]]) -> list[str]:
    scored = [r for r in rows if "skipped" not in r]
    if not scored:
        return []
    fid = max(scored, key=lambda r: abs(r["d_fid"]))
    fvd = max(scored, key=lambda r: abs(r["d_fvd"]))
    return [f"- {name}: FID {fid['d_fid']:+.2f} ({fid['label']}); "
            f"FVD {fvd['d_fvd']:+.2f} ({fvd['label']})"]


def page_markdown(base, reference: str, sets: dict[str, dict[str, Any]], commit: str,
                  command: str, title: str | None = None, banner: str | None = None) -> str:
    """The results page: every variant x set, the guidance rows, the largest moves,
    provenance."""
    names = list(sets)
    lines = [f"# {title or f'How far protocol choices move FID and FVD ({base.name})'}", ""]
    if banner:
        lines += [f"> **{banner}**", ""]
    header = ["protocol choice"]
    for name in names:
        header += [f"{name}: FID (Δ)", f"{name}: FVD (Δ)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, rows in _page_rows(sets):
        lines.append("| " + " | ".join([label] + [c for row in rows for c in _cells(row)])
                     + " |")
    if any("guidance" in sets[name] for name in names):
        lines += ["", GUIDANCE_NOTE]
    lines += ["", "Largest moves from the base protocol:", ""]
    for name in names:
        rows = sets[name]["rows"][1:]
        lines += _largest_moves(name, [r for r in rows if "guidance" not in r])
        lines += _largest_moves(f"{name}, sampling guidance",
                                [r for r in rows if "guidance" in r])
    lines += ["", "## Provenance", "",
              f"- git commit: `{commit}`",
              f"- base protocol: `{base.name}` (hash `{base.hash}`); each variant's hash is in "
              "the per-set tables (`--out`) and result files",
              f"- FVD flavour of the base protocol: {base.fvd_flavour.name}",
              f"- reference: `{reference}`"]
    for name in names:
        meta = sets[name]["meta"]
        detectors = ", ".join(f"{role}: {value}" for role, value in meta["detectors"].items())
        lines.append(f"- {name}: `{sets[name]['path']}`; {meta['n_clips']} clips, FID on "
                     f"{meta['fid_n']} frames, FVD on {meta['fvd_n']} videos; detectors "
                     f"{detectors}" + (f" (**{meta['label']}**)" if meta["label"] else ""))
    for name in names:
        if "guidance" in sets[name]:
            lines += provenance_lines(name, sets[name]["rows"], sets[name]["guidance"])
    lines += ["", "Command:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"
