"""Sampling guidance as a sensitivity row (`repro eval-sensitivity --guidance`).

The paper's "classifier-free guidance scale of 4.0" is read by this suite as guidance on the
condition frames (text is fixed); Vista samples with 2.5. Instead of assuming the choice does
not matter, a generated set that records how it was sampled (`sampling.json`, written by
maskgwm.sample.sample_videoset) is regenerated at each scale with every other setting its own
(checkpoint, steps, seed, frames, window, resolution, views, real set), into
`<table stem>-guidance/g<scale>/`, and scored under the base protocol. The set's own scale is
the set itself (not regenerated). A set without sampling.json, or whose checkpoint or real set
is not at hand, gets rows that say so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

DEFAULT_GUIDANCE = (1.0, 2.5, 4.0)
NOT_REGENERABLE = "skipped: not regenerable ({})"
SAMPLING_KEYS = ("guidance", "steps", "seed", "checkpoint_sha256", "frames", "window",
                 "resolution")


@dataclass(frozen=True)
class Regeneration:
    """How to regenerate a generated set: its checkpoint, the real set whose condition frames
    seeded it, and the settings of its sampling.json."""
    checkpoint: Path
    real: Path
    settings: dict[str, Any]

    @property
    def guidance(self) -> float:
        return float(self.settings["guidance"])


def parse_guidance(text: str | None) -> tuple[float, ...]:
    """`--guidance`: None is DEFAULT_GUIDANCE, "" none, else comma-separated scales."""
    if text is None:
        return DEFAULT_GUIDANCE
    try:
        scales = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--guidance {text!r}: expected comma-separated scales, e.g. "
                         "1.0,2.5,4.0 ('' to vary no guidance)") from None
    return tuple(dict.fromkeys(scales))


def guidance_label(guidance: float) -> str:
    return f"sampling guidance {float(guidance)} (regenerated)"


def guidance_folder(stem: Path, guidance: float) -> Path:
    """Where the set regenerated at `guidance` goes: `<stem>-guidance/g<guidance>/`."""
    return stem.parent / f"{stem.stem}-guidance" / f"g{float(guidance)}"


def _checkpoint(record: dict[str, Any], given: Path | None) -> Path | str:
    """The checkpoint a set was sampled with (`given`, else the one its sampling.json names),
    or why it is not at hand."""
    from evals.weights import cached_sha256, sidecar_cache
    if given is not None and not given.is_file():
        raise FileNotFoundError(f"model checkpoint {given} not found (--checkpoint)")
    if given is None and not record.get("checkpoint"):
        return "no checkpoint named in sampling.json; give --checkpoint"
    checkpoint = given or Path(record["checkpoint"])
    if not checkpoint.is_file():
        return f"no checkpoint: {checkpoint}, named in sampling.json, not found; give --checkpoint"
    if cached_sha256(checkpoint, sidecar_cache(checkpoint)) != \
            record["settings"].get("checkpoint_sha256"):
        return f"checkpoint {checkpoint} is not the one the set was sampled with (SHA-256 differs)"
    return checkpoint


def _real_set_problem(real: Path, settings: dict[str, Any]) -> str | None:
    """Why `real` is not the real set whose condition frames the set was sampled from."""
    from evals.videoset import VideoSet, VideoSetError
    from maskgwm.sample import real_set_digest
    try:
        digest = real_set_digest(VideoSet.open(real))
    except (VideoSetError, OSError) as err:
        return f"{real} is not a real video set ({err}); give --real"
    if digest != settings.get("real_set"):
        return f"{real} is not the real set whose condition frames the set was sampled from; " \
            "give --real"
    return None


def plan_regeneration(generated: Path, checkpoint: Path | None, real: Path
                      ) -> Regeneration | str:
    """How to regenerate `generated` (`checkpoint`: instead of the one its sampling.json
    names), or why it cannot be (the text of its skipped rows)."""
    from maskgwm.sample import SETTINGS_FILE
    record_path = Path(generated) / SETTINGS_FILE
    if not record_path.is_file():
        return NOT_REGENERABLE.format(f"no {SETTINGS_FILE}")
    record = json.loads(record_path.read_text())
    found = _checkpoint(record, checkpoint)
    if isinstance(found, str):
        return NOT_REGENERABLE.format(found)
    problem = _real_set_problem(Path(real), record["settings"])
    if problem:
        return NOT_REGENERABLE.format(problem)
    return Regeneration(found, Path(real), record["settings"])


def regenerate(plan: Regeneration, guidance: float, folder: Path, vae, device: str,
               log: Callable[[str], Any] = print) -> Path:
    """The set of `plan` sampled at `guidance` into `folder` (resumes; refuses a folder of
    other settings), checked to differ from the original only in guidance."""
    from maskgwm.sample import sample_videoset

    settings = plan.settings
    width, height = settings.get("resolution") or (None, None)
    sample_videoset(plan.checkpoint, vae, plan.real, folder, steps=settings["steps"],
                    guidance=guidance, seed=settings["seed"], frames=settings["frames"],
                    width=width, height=height, window=settings["window"], device=device,
                    views=settings.get("views"), log=log)
    _check_only_guidance_differs(folder, settings, guidance)
    return folder


def _check_only_guidance_differs(folder: Path, original: dict[str, Any], guidance: float
                                 ) -> None:
    from maskgwm.sample import SETTINGS_FILE
    settings = json.loads((folder / SETTINGS_FILE).read_text())["settings"]
    expected = {**original, "guidance": guidance}
    changed = sorted(k for k in set(settings) | set(expected)
                     if settings.get(k) != expected.get(k))
    if changed:
        raise ValueError(f"{folder} was sampled with settings other than the original set's "
                         f"(differs in {', '.join(changed)}); the guidance row would not "
                         "measure guidance alone")


def sampling_record(settings: dict[str, Any], guidance: float, folder: Path,
                    reused: bool) -> dict[str, Any]:
    """What a guidance row records of how its set was sampled."""
    return {**{key: settings.get(key) for key in SAMPLING_KEYS}, "guidance": guidance,
            "folder": str(folder), "reused": reused}


def guidance_rows(plan: Regeneration | str, scales: tuple[float, ...], base_row: dict[str, Any],
                  generated: Path, stem: Path, regenerate_at: Callable[[float, Path], Path],
                  score: Callable[[Path], tuple[float, float]]) -> list[dict[str, Any]]:
    """One row per scale: skipped (`plan` is the reason), the set itself at its own scale
    (`base_row`'s values), or the set regenerated by `regenerate_at(scale, folder)` and
    scored by `score(folder)` -> (FID, FVD) under the base protocol."""
    rows = []
    for guidance in scales:
        label = guidance_label(guidance)
        if isinstance(plan, str):
            rows.append({"label": label, "guidance": guidance, "skipped": plan})
            continue
        reused = guidance == plan.guidance
        folder = generated if reused else regenerate_at(guidance, guidance_folder(stem, guidance))
        fid, fvd = (base_row["fid"], base_row["fvd"]) if reused else score(folder)
        rows.append({"label": f"sampling guidance {guidance} (as sampled: this set, not "
                              "regenerated)" if reused else label,
                     "guidance": guidance, "reused": reused, "hash": base_row["hash"],
                     "fid": fid, "fvd": fvd, "d_fid": fid - base_row["fid"],
                     "d_fvd": fvd - base_row["fvd"],
                     "sampling": sampling_record(plan.settings, guidance, folder, reused)})
    return rows


def summary(plan: Regeneration | str, scales: tuple[float, ...]) -> dict[str, Any]:
    """The per-set guidance record: scales varied, the set's own scale or why not regenerable."""
    if isinstance(plan, str):
        return {"scales": list(scales), "sampled_with": None, "not_regenerable": plan}
    return {"scales": list(scales), "sampled_with": plan.guidance,
            "checkpoint": str(plan.checkpoint), "real": str(plan.real)}


def provenance_lines(name: str, rows: list[dict[str, Any]], info: dict[str, Any]) -> list[str]:
    """Markdown bullets: how each guidance row's set was sampled."""
    if not info["scales"]:
        return [f"- {name}: sampling guidance not varied (`--guidance ''`)"]
    if info["sampled_with"] is None:
        return [f"- {name}: sampling guidance rows {info['not_regenerable']}"]
    lines = [f"- {name}: sampled with guidance {info['sampled_with']}; guidance rows "
             f"regenerated from `{info['checkpoint']}` on the condition frames of "
             f"`{info['real']}`:"]
    for row in rows:
        if "sampling" in row:
            s = row["sampling"]
            where = "the set itself" if s["reused"] else f"`{s['folder']}`"
            size = "x".join(map(str, s["resolution"])) if s["resolution"] else "the real size"
            lines.append(f"  - guidance {s['guidance']}: {where}; steps {s['steps']}, seed "
                         f"{s['seed']}, frames {s['frames'] or 'as the real clips'}, window "
                         f"{s['window']}, {size}, checkpoint SHA-256 "
                         f"`{s['checkpoint_sha256']}`")
    return lines
