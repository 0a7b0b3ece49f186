"""A training run's record on disk and in its log: ``results.csv`` / ``results.json`` per
epoch, ``results.png``, the history a resumed run reads back, and the line logged per epoch."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

LOSS_NAMES = ("box", "cls", "dfl")


def write_results(
    out: Path, history: list[dict[str, Any]], final: dict[str, Any] | None = None
) -> None:
    """Per-epoch metrics as ``results.csv`` (spreadsheets) and ``results.json`` (programs)."""
    if history:
        keys = list(history[-1])
        tmp = out / ".results.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)
        os.replace(tmp, out / "results.csv")
    doc: dict[str, Any] = {"epochs": history}
    if final is not None:
        doc["final"] = {k: v for k, v in final.items() if k != "text"}
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, out / "results.json")


def plot_results(out: Path, history: list[dict[str, Any]]) -> None:
    """``results.png``: training loss parts and validation mAP per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k in LOSS_NAMES:
        axes[0].plot(epochs, [r[f"train/{k}_loss"] for r in history], marker=".", label=k)
    axes[0].set(title="training loss", xlabel="epoch")
    axes[0].legend()
    for k, label in (("val/map50_95", "mAP50-95"), ("val/map50", "mAP50")):
        pts = [(r["epoch"], r[k]) for r in history if r.get(k) is not None]
        if pts:
            axes[1].plot(*zip(*pts), marker=".", label=label)
    axes[1].set(title="validation (EMA)", xlabel="epoch", ylim=(0, None))
    if axes[1].lines:  # no mAP yet before the first evaluation
        axes[1].legend()
    fig.tight_layout()
    tmp = out / ".results.png.tmp"
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, out / "results.png")


def read_history(path: Path, epochs: int) -> list[dict[str, Any]]:
    """The per-epoch rows of the run being resumed, up to its checkpoint's epoch."""
    try:
        rows = json.loads(path.read_text())["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [r for r in rows if isinstance(r, dict) and r.get("epoch", 0) <= epochs]


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The log line of one finished epoch: its losses, mAP when evaluated, and time."""
    losses = " ".join(f"{k} {row[f'train/{k}_loss']:.3f}" for k in LOSS_NAMES)
    val = ""
    if row["val/map50_95"] is not None:
        val = f"  mAP50-95 {row['val/map50_95']:.4f} mAP50 {row['val/map50']:.4f}"
    return f"epoch {row['epoch']}/{epochs}: {losses}{val}  ({row['time']:.0f} s)"
