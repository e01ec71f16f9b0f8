"""`repro plot TARGET`: our collected numbers beside the paper's, as PNG and PDF figures.

Long-horizon tables (Figures 6 and 7, which have a `seconds` column) become FVD and FID
curves against seconds with interval bands, one line per cell, plus the few values the paper
states in its text (its curves are not transcribed). Other tables become bar charts, one panel
per metric (FVD, FID, and Table 4a's training Time), the paper's value (hatched) beside ours
for each cell. Numbers made with
random-weights detectors carry a visible note; FVD axes name its flavour. Files: `results/plots/<table>-<scale>.{png,pdf}`,
written atomically. With several seeds per cell (`repro collect --seeds N`), ours is the mean
over seeds and the error bars / bands are +- the sample std over seeds instead of the
bootstrap interval.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from evals.atomic import atomic_path  # noqa: E402
from repro.targets import paper  # noqa: E402
from repro.targets.jobfiles import Target  # noqa: E402
from repro.paths import results_dir  # noqa: E402
from repro.report.table import (RANDOM_WEIGHTS_NOTE, is_random, max_seeds,  # noqa: E402
                                ours_at, source_labels)
from repro.report.timing import PAPER_HARDWARE, TIME, hardware  # noqa: E402

CURVE_METRICS = ("FVD", "FID")     # what an evaluation produces
OUR_METRICS = (*CURVE_METRICS, TIME)  # and training (Table 4a's Time, timing.py)


def metric_label(metric: str, ours: pd.DataFrame) -> str:
    """The axis label: FVD says its flavour (e.g. "FVD (TATS-FVD)") when ours recorded it,
    Time its unit."""
    from evals.protocols import FVD_FLAVOURS
    if metric == TIME:
        return "Time (days per 10K steps)"
    if metric != "FVD" or not len(ours) or "fvd_flavour" not in ours.columns:
        return metric
    names = set(ours.loc[ours["metric"] == "FVD", "fvd_flavour"].dropna().astype(str))
    tags = sorted({f.tag for f in FVD_FLAVOURS.values() if f.name in names})
    return f"FVD ({', '.join(tags)})" if tags else metric
PAPER_STYLE = {"color": "0.75", "hatch": "//", "edgecolor": "0.3"}
CURVES_NOT_TRANSCRIBED = ("paper curves not transcribed (the text gives no numbers); "
                          "only values stated in the text are marked")


def plots_dir(root: Path | None = None) -> Path:
    return (root or results_dir()) / "plots"


def save_figure(fig, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf atomically (evals/atomic.py)."""
    written = []
    for ext, extra in (("png", {"dpi": 120, "metadata": {"Software": None}}),
                       ("pdf", {"metadata": {"CreationDate": None, "ModDate": None}})):
        final = stem.with_suffix(f".{ext}")
        with atomic_path(final, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight", **extra)
        written.append(final)
    plt.close(fig)
    return written


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _cell_labels(frame: pd.DataFrame) -> dict[str, str]:
    """A readable label per cell: the paper's series/method name, else the cell id."""
    variants = paper.variant_columns(frame)
    named = [c for c in ("series", "method", "model") if c in variants]
    labels = {}
    for cell, group in frame.groupby("cell", sort=False):
        labels[cell] = str(group[named[0]].iloc[0]) if named else cell
    return labels


def _seed_mean(mine: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Per `by` value (or one row): value = mean over seeds, ci_low/ci_high = mean -+ sample
    std where there are several seeds (else the row's own interval); the last row per seed."""
    if "seed" not in mine.columns:
        mine = mine.assign(seed=0)
    keys = [by] if by else []
    mine = mine.assign(_v=mine["value"].map(_float)).drop_duplicates(keys + ["seed"],
                                                                     keep="last")
    out = []
    for _, group in (mine.groupby(keys, sort=False) if keys else [(None, mine)]):
        row = group.iloc[-1].copy()
        values = group["_v"].dropna()
        if len(values) > 1:
            mean, std = values.mean(), values.std(ddof=1)
            row["value"], row["ci_low"], row["ci_high"] = mean, mean - std, mean + std
        out.append(row)
    return pd.DataFrame(out)


def _footer(fig, notes: list[str], random: bool) -> None:
    if random:
        fig.text(0.5, 1.0, f"NOTE: {RANDOM_WEIGHTS_NOTE}", ha="center", va="bottom",
                 fontsize=11, fontweight="bold", color="darkred")
    if notes:
        fig.text(0.01, -0.01, "\n".join(notes), ha="left", va="top", fontsize=8, color="0.2")


def plot_curves(table: str, ours: pd.DataFrame, scale: str, root: Path | None = None) -> list[Path]:
    """FVD and FID against seconds for a long-horizon table (fig6, fig7)."""
    ref = paper.load_paper_table(table)
    labels = _cell_labels(ref)
    ours = ours[ours["table"].astype(str) == table] if len(ours) else ours
    sources = source_labels(ours, table)     # Vista's rows: whose clips (repro/report/table.py)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, CURVE_METRICS):
        for i, cell in enumerate(labels):
            colour = colours[i % len(colours)]
            mine = ours[(ours["cell"].astype(str) == cell) & (ours["metric"] == metric)] \
                if len(ours) else ours
            if len(mine):
                mine = _seed_mean(mine.assign(_s=mine["seconds"].map(_float)), "_s")
                mine = mine.sort_values("_s")
                x, y = mine["_s"].to_numpy(), mine["value"].map(_float).to_numpy()
                ax.plot(x, y, marker="o", color=colour,
                        label=sources.get(cell, f"{labels[cell]} (ours)"))
                if "ci_low" in mine.columns:
                    low, high = mine["ci_low"].map(_float), mine["ci_high"].map(_float)
                    if low.notna().any():
                        ax.fill_between(x, low.to_numpy(), high.to_numpy(), color=colour,
                                        alpha=0.2, linewidth=0)
            stated = ref[(ref["cell"] == cell) & (ref["metric"] == metric)
                         & ref["value"].notna()]
            for _, row in stated.iterrows():
                ax.scatter([_float(row["seconds"])], [row["value"]], marker="*", s=160,
                           color=colour, edgecolor="black", zorder=5,
                           label=f"{labels[cell]} (paper, {row['value']:g} at "
                                 f"{row['seconds']} s)")
        ax.set_xlabel("seconds")
        ax.set_ylabel(metric_label(metric, ours))
        ax.set_title(f"{table}: {metric_label(metric, ours)}")
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no results collected", transform=ax.transAxes, ha="center")
    spread = ("mean ± sample std over seeds" if max_seeds(ours) > 1
              else "bootstrap interval")
    fig.suptitle(f"{table} (ours: scale {scale}; bands = {spread})")
    _footer(fig, [CURVES_NOT_TRANSCRIBED], is_random(ours))
    return save_figure(fig, plots_dir(root) / f"{table}-{scale}")


def plot_bars(table: str, ours: pd.DataFrame, scale: str, root: Path | None = None,
              run_cells: frozenset[str] = frozenset()) -> list[Path]:
    """Per metric, the paper's value (hatched) beside ours for each cell; `run_cells` are the
    cells the target runs (the others, e.g. peers' quoted numbers, are marked paper only)."""
    ref = paper.load_paper_table(table)
    labels = _cell_labels(ref)
    cells = list(labels)
    metrics = [m for m in dict.fromkeys(ref["metric"]) if m in OUR_METRICS]
    ours = ours[ours["table"].astype(str) == table] if len(ours) else ours
    sources = source_labels(ours, table)
    fig, axes = plt.subplots(len(metrics), 1, squeeze=False, layout="constrained",
                             figsize=(max(6.0, 0.8 * len(cells) + 2), 3.8 * len(metrics)))
    width = 0.38
    for ax, metric in zip(axes[:, 0], metrics):
        for i, cell in enumerate(cells):
            hit = ref[(ref["cell"] == cell) & (ref["metric"] == metric)]
            value = float(hit["value"].iloc[0]) if len(hit) else math.nan
            if not math.isnan(value):
                ax.bar(i - width / 2, value, width, label="paper", **PAPER_STYLE)
            mine = ours[(ours["cell"].astype(str) == cell) & (ours["metric"] == metric)] \
                if len(ours) else ours
            if len(mine):
                row = _seed_mean(mine).iloc[-1]
                v, lo, hi = (_float(row.get(c)) for c in ("value", "ci_low", "ci_high"))
                ax.bar(i + width / 2, v, width, color="tab:blue", label="ours")
                if cell in sources:
                    ax.annotate(sources[cell], (i + width / 2, v), fontsize=6, rotation=90,
                                ha="center", va="bottom")
                if not (math.isnan(lo) or math.isnan(hi)):  # the interval need not hold v
                    ax.errorbar([i + width / 2], [(lo + hi) / 2], yerr=[[(hi - lo) / 2]],
                                fmt="none", ecolor="black", capsize=3)
            else:
                ax.text(i + width / 2, 0, "not run yet" if cell in run_cells else "paper only",
                        rotation=90, ha="center", va="bottom",
                        fontsize=7, color="0.4")
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles))
        ax.legend([unique[n] for n in unique], list(unique), fontsize=8)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([labels[c] for c in cells], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric_label(metric, ours))
        ax.set_title(f"{table}: {metric_label(metric, ours)}")
        ax.grid(axis="y", alpha=0.3)
    spread = ("ours = mean, error bars = ± sample std over seeds" if max_seeds(ours) > 1
              else "error bars = bootstrap interval")
    fig.suptitle(f"{table}: paper (hatched) vs ours (scale {scale}; {spread})")
    notes = ["empty paper bars: not reported in the paper"] if ref["value"].isna().any() else []
    timed = ours[ours["metric"] == TIME] if len(ours) else ours
    if TIME in metrics and len(timed) and "device" in timed.columns:
        kinds = "; ".join(dict.fromkeys(hardware(row) for _, row in timed.iterrows()))
        notes.append(f"Time: ours on {kinds}, the paper's on {PAPER_HARDWARE}: absolute times "
                     "depend on the hardware (ratios to the first row: `repro table`)")
    _footer(fig, notes, is_random(ours))
    return save_figure(fig, plots_dir(root) / f"{table}-{scale}")


def plot_target(target: Target, scale: str, root: Path | None = None,
                seeds: int | None = None) -> list[Path]:
    """Every table of `target` as a figure (`seeds` N: seeds 0..N-1 of the CSV, None: all);
    returns the files written."""
    ours = ours_at(target.name, scale, root, seeds)
    written = []
    for table in target.tables():
        ref = paper.load_paper_table(table)
        if not set(OUR_METRICS) & set(ref["metric"]):
            continue
        if "seconds" in paper.variant_columns(ref):
            written += plot_curves(table, ours, scale, root)
        else:
            cells = frozenset(c.split("/", 1)[1] for run in target.runs.values()
                              for c in run.cells if c.startswith(f"{table}/"))
            written += plot_bars(table, ours, scale, root, cells)
    return written
