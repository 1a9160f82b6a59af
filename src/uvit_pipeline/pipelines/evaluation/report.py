"""The one-page run report: metrics with their meaning, the sample grid, the loss curve, what was
overridden on the command line, and where the data and the checkpoint live (self-contained HTML)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from PIL import Image

from uvit_pipeline._io import read_json

MEANINGS = {
    "fid": "Fréchet Inception Distance to the reference statistics (pytorch-fid Inception, lower is "
    "better); comparable with the paper only with the official statistics file and 50K samples.",
    "demo_fd": "Fréchet distance in the feature space of the demo's small classifier (lower is "
    "better). Not an FID: only comparable with other demo_fd values of the same classifier.",
    "demo_class_accuracy": "Share of samples the demo classifier assigns to the class (or caption) "
    "they were generated for (chance = 1 / number of classes).",
    "clip_score": "Mean cosine similarity (x100) of CLIP image and text embeddings of samples and "
    "their prompts (higher is better).",
}


def _meaning(metric: str) -> str:
    if metric in MEANINGS:
        return MEANINGS[metric]
    if metric.startswith("fid"):  # fid10k, fid_noguidance, ...: not the paper's protocol
        return (
            MEANINGS["fid"]
            + " This one is not under the paper's protocol: "
            + ("fewer samples" if metric[3:4].isdigit() else "")
            + (" without guidance" if metric.endswith("_noguidance") else "")
            + "."
        )
    return ""


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _table(rows: list[tuple[str, str]], head: tuple[str, str]) -> str:
    cells = "".join(
        f"<tr><td><code>{html.escape(a)}</code></td><td>{html.escape(b)}</td></tr>" for a, b in rows
    )
    return f"<table><tr><th>{head[0]}</th><th>{head[1]}</th></tr>{cells}</table>"


def _flat(prefix: str, value) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(f"{prefix}.{k}", v)]
    return [(prefix, json.dumps(value))]


def write_run_report(
    uvit_checkpoint: str,
    image_features: str | None,
    evaluation_metrics: dict,
    sample_grid: Image.Image,
    run_overrides: dict,
    evaluation: dict,
) -> str:
    """HTML report of one evaluation (logged to MLflow next to the metrics)."""
    ckpt = Path(uvit_checkpoint)
    config = read_json(ckpt / "config.json")
    summary_file = ckpt / "summary.json"
    summary = read_json(summary_file) if summary_file.is_file() else {}
    metric_rows = "".join(
        f"<tr><td><code>{k}</code></td><td>{v:.4g}</td><td>{html.escape(_meaning(k))}</td></tr>"
        for k, v in evaluation_metrics.items()
    )
    sampling = (
        f"{evaluation['n_samples']} samples, {evaluation['sampler']} {evaluation['steps']} steps, "
        f"CFG scale {evaluation['cfg_scale']} in the (1+s)·ε_c − s·ε_u convention, "
        f"{'EMA' if evaluation['use_ema'] else 'raw'} weights"
    )
    curve = ckpt / "loss_curve.png"
    parts = [
        "<html><head><meta charset='utf-8'><title>uvit_pipeline run report</title><style>"
        "body{font-family:sans-serif;max-width:960px;margin:2em auto}td,th{padding:4px 10px;"
        "border-bottom:1px solid #ddd;text-align:left;vertical-align:top}img{max-width:100%}"
        "</style></head><body>",
        f"<h1>Run report: {html.escape(str(config.get('official_config') or ckpt.parent.name))}</h1>",
        f"<p>{html.escape(sampling)}.</p>",
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>meaning</th></tr>"
        + metric_rows
        + "</table>",
        "<h2>Samples</h2>",
        f"<img alt='sample grid' src='data:image/png;base64,{_png(sample_grid)}'>",
    ]
    if curve.is_file():
        parts += [
            "<h2>Training</h2>",
            f"<p>{summary.get('steps', '?')} steps, final loss {summary.get('final_loss', '?')}, "
            f"{summary.get('wall_time_s', 0) / 60:.1f} min.</p>",
            f"<img alt='loss curve' src='data:image/png;base64,{_png(Image.open(curve))}'>",
        ]
    overrides = [row for k, v in (run_overrides or {}).items() for row in _flat(k, v)]
    parts += [
        "<h2>Parameters changed on the command line</h2>",
        _table(overrides, ("parameter", "value"))
        if overrides
        else "<p>None: the environment's values.</p>",
        "<h2>Where everything is</h2>",
        _table(
            [
                ("checkpoint", str(ckpt)),
                ("feature store", str(image_features) if image_features else "—"),
                ("trained on", str(config.get("data", {}).get("path", "—"))),
                ("imported from", str(config.get("imported_from", "—"))),
            ],
            ("artefact", "location (the folder name before the last one is the version)"),
        ),
        "</body></html>",
    ]
    return "\n".join(parts)
