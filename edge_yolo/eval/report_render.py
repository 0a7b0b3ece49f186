"""The accuracy report's three forms: Markdown (also printed), one self-contained HTML page
with PNG plots (drops with their intervals, per-class deltas, speed against accuracy), and the
JSON beside them. The numbers come from :func:`edge_yolo.eval.report.build_report`."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .report import AGREEMENT_CONF, AGREEMENT_IOU, is_diagnostic


def markdown(report: dict[str, Any]) -> str:
    d, s = report["dataset"], report["settings"]
    lines = [
        f"# Accuracy report: {d['data']} [{d['split']}], {d['images']} images",
        "",
        f"Every row: the same Detector pre/post-processing and COCO evaluator, conf {s['conf']:g}, "
        f"NMS IoU {s['iou']:g}, max {s['max_det']} detections per image. Delta: mAP50-95 points "
        f"against the float baseline, with a 95 % interval from a paired bootstrap over images "
        f"({report['bootstrap']['resamples']} resamples). Agreement: baseline boxes scoring >= "
        f"{AGREEMENT_CONF} matched at IoU >= {AGREEMENT_IOU}. Empty: images where the float "
        "model has a detection scoring >= 0.5 and the row has none >= 0.25. A torch "
        "fake-quant row is the same quantization simulated in PyTorch: a gap between it and "
        "its runtime row is the converter's, not quantization's (those rows are not gated). "
        "A QAT init row is a QAT run's start (quantizers initialised, no update): the gap to "
        "its QAT row is what fine-tuning added.",
        "",
        _fidelity_note(report),
        "",
        "| model | backend | mAP50-95 | mAP50 | delta [95% CI] | fidelity [95% CI] | size MB "
        "| latency ms | matched | mean IoU | score err | empty |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        a = r["agreement"]
        first = r is report["rows"][0]
        delta = "baseline" if first else (
            f"{r['delta']:+.2f} [{r['delta_ci'][0]:+.2f}, {r['delta_ci'][1]:+.2f}]")
        fid = r.get("fidelity", math.nan)
        lo, hi = r.get("fidelity_ci", (math.nan, math.nan))
        fidelity = f"{_fmt(fid, '.2f')}" + ("" if first else f" [{lo:+.2f}, {hi:+.2f}]")
        lines.append(
            f"| {r['name']} | {r['backend']} | {100 * r['map50_95']:.2f} | {100 * r['map50']:.2f} "
            f"| {delta} | {fidelity} | {_fmt(r['size_mb'], '.2f')} | "
            f"{_fmt(r['latency_ms'], '.1f')} | "
            f"{_fmt(a.get('matched_share'), '.3f')} | {_fmt(a.get('mean_iou'), '.3f')} | "
            f"{_fmt(a.get('score_error'), '.4f')} | "
            f"{r.get('empty_images', 0) if r is not report['rows'][0] else '-'} |"
        )
    if report.get("ships"):
        lines += ["", "Ships (per target, of its int8 PTQ and QAT artifacts the one closest to "
                      "the float model; a QAT run worse than PTQ never ships):"]
        lines += [f"- {c['target']}: **{c['ships']}** over {c['over']}: {c['why']}"
                  for c in report["ships"]]
    calibrated = [r for r in report["rows"] if r["calibration"]]
    if calibrated:
        lines += ["", "Calibration:"]
        for r in calibrated:
            c = r["calibration"]
            method = r.get("calibration_method") or "-"
            lines.append(f"- {r['name']}: {method}; {c['num_images']} images from "
                         f"`{c['dataset']}` [{c.get('split') or '-'}]")
    mixed = [r for r in report["rows"] if r.get("float_blocks")]
    if mixed:
        lines += ["", "Kept in float (mixed precision, `export --max-drop`):"]
        lines += [f"- {r['name']}: {', '.join(r['float_blocks'])}" for r in mixed]
    lines += ["", "Toolchain: " + ", ".join(f"{k} {v}" for k, v in report["toolchain"].items())]
    return "\n".join(lines) + "\n"


def _fidelity_note(report: dict[str, Any]) -> str:
    f = report.get("fidelity")
    if not f:
        return ""
    text = (f"Fidelity: mAP50-95 x 100 of a row's boxes scoring >= {f['candidate_conf']:g} "
            f"against the float model's own boxes scoring >= "
            f"{f['reference_conf']:g} ({f['reference_boxes']} boxes) on {f['data']}, "
            f"{f['images']} images, no labels needed; 100 is the float model itself, the "
            "interval (paired bootstrap, same resamples) is of the drop from 100.")
    if not f["reference_boxes"]:
        text += (f" The float model finds nothing above {f['reference_conf']:g} on these "
                 "images, so fidelity could not be measured.")
    return text


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def plots(report: dict[str, Any]) -> dict[str, bytes]:
    """PNG plots: drops with their intervals, per-class deltas, speed against accuracy."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    out: dict[str, bytes] = {}

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        return buf.getvalue()

    others = rows[1:]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(others))))
    y = np.arange(len(others))
    deltas = np.array([r["delta"] for r in others])
    lo = deltas - np.array([r["delta_ci"][0] for r in others])
    hi = np.array([r["delta_ci"][1] for r in others]) - deltas
    ax.errorbar(deltas, y, xerr=[np.nan_to_num(lo), np.nan_to_num(hi)], fmt="o", capsize=4)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y, [r["name"] for r in others])
    ax.set_xlabel("mAP50-95 change vs float (points, 95% CI)")
    out["drops"] = png(fig)

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(others))))
    drops = np.array([r.get("fidelity", np.nan) - 100.0 for r in others])
    lo = drops - np.array([r.get("fidelity_ci", (np.nan, np.nan))[0] for r in others])
    hi = np.array([r.get("fidelity_ci", (np.nan, np.nan))[1] for r in others]) - drops
    ax.errorbar(drops, y, xerr=[np.nan_to_num(lo), np.nan_to_num(hi)], fmt="o", capsize=4)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y, [r["name"] for r in others])
    ax.set_xlabel("fidelity change vs float (points, 95% CI; no labels needed)")
    out["fidelity"] = png(fig)

    classes = list(rows[0]["per_class"])
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(others))))
    grid = np.array([[r["per_class_delta"].get(c, np.nan) for c in classes] for r in others])
    bound = max(1.0, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0)
    im = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_yticks(np.arange(len(others)), [r["name"] for r in others])
    ax.set_xticks(np.arange(len(classes)), classes, rotation=45, ha="right")
    fig.colorbar(im, ax=ax, label="AP50-95 change (points)")
    out["per_class"] = png(fig)

    # runtime rows only: a fake-quant row's latency is a simulation's, far off every real one
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["latency_ms"] is not None and not is_diagnostic(r):
            ax.scatter(r["latency_ms"], 100 * r["map50_95"])
            ax.annotate(r["name"], (r["latency_ms"], 100 * r["map50_95"]), fontsize=7)
    ax.set_xlabel("median latency on this host (ms)")
    ax.set_ylabel("mAP50-95")
    out["speed_accuracy"] = png(fig)
    return out


def html(report: dict[str, Any], images: dict[str, bytes]) -> str:
    """One self-contained page: the table, the provenance and the plots inlined."""
    import html as html_lib

    md = markdown(report)
    table = [line for line in md.splitlines() if line.startswith("|")]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    cells = "".join(
        "<tr>" + "".join(f"<td>{html_lib.escape(c)}</td>" for c in row) + "</tr>" for row in body
    )
    pictures = "".join(
        f'<figure><img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}">'
        f"<figcaption>{k.replace('_', ' ')}</figcaption></figure>"
        for k, v in images.items()
    )
    prose = "".join(
        f"<p>{html_lib.escape(line)}</p>" for line in md.splitlines()
        if line and not line.startswith(("|", "#"))
    )
    title = html_lib.escape(md.splitlines()[0].lstrip("# "))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;max-width:1100px;"
        "margin:auto}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "table{border-collapse:collapse}</style></head><body>"
        f"<h1>{title}</h1><table><tr>{''.join(f'<th>{html_lib.escape(h)}</th>' for h in head)}"
        f"</tr>{cells}</table>{prose}{pictures}"
        f"<details><summary>JSON</summary><pre>{html_lib.escape(json.dumps(report, indent=1))}"
        "</pre></details></body></html>\n"
    )


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    from ..fileio import atomic_write_bytes, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    images = plots(report)
    paths = {"json": out / "report.json", "markdown": out / "report.md",
             "html": out / "report.html"}
    atomic_write_text(paths["json"], json.dumps(report, indent=1) + "\n")
    atomic_write_text(paths["markdown"], markdown(report))
    atomic_write_text(paths["html"], html(report, images))
    for name, data in images.items():
        atomic_write_bytes(out / f"{name}.png", data)
    return paths
