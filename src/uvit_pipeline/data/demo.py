"""Synthetic, seeded demo data: coloured shapes with captions, in ImageNet and COCO 2014 layouts."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .._io import atomic_write_json, read_json

log = logging.getLogger(__name__)

DEMO_FORMAT_VERSION = 3
_MARKER = ".uvit-demo"  # marks folders this module created (and may therefore replace)
_SUPERSAMPLE = 4  # draw at 4x then downsample: anti-aliased edges even at 32 px

COLOURS = {
    "blue": (40, 60, 220),
    "cyan": (40, 210, 220),
    "green": (40, 180, 40),
    "magenta": (210, 40, 200),
    "orange": (250, 140, 20),
    "red": (220, 30, 30),
    "white": (245, 245, 245),
    "yellow": (240, 220, 40),
}
# Class = (colour, shape); names are already in sorted order so label == list position, and they
# hold no '_' so the official "basename before the first '_'" label rule (§7.1) agrees too.
CLASSES = [
    ("blue", "circle"),
    ("blue", "cross"),
    ("cyan", "diamond"),
    ("green", "triangle"),
    ("magenta", "ring"),
    ("orange", "triangle"),
    ("red", "circle"),
    ("red", "square"),
    ("white", "cross"),
    ("yellow", "star"),
]
CLASS_NAMES = [f"{c}-{s}" for c, s in CLASSES]
_BACKGROUNDS = ("grey", "pastel", "dark", "gradient")


def _flat_colour(rng: np.random.Generator, kind: str) -> np.ndarray:
    # Backgrounds vary in lightness, tint and gradient but stay low in saturation (a tint of at most
    # ±12 per channel), so a class's colour is carried by its shape: that is what a tiny model trained
    # for minutes can learn to condition on (docs/experiments.md).
    if kind == "grey":
        return np.full(3, rng.integers(70, 150), dtype=np.float64)
    base = rng.integers(5, 55) if kind == "dark" else rng.integers(170, 235)  # dark | pastel
    return np.clip(base + rng.integers(-12, 13, size=3), 0, 255).astype(np.float64)


def _background(rng: np.random.Generator, kind: str, n: int) -> tuple[Image.Image, np.ndarray]:
    """(n x n background image, its mean colour): flat grey/pastel/dark, or a linear gradient."""
    if kind != "gradient":
        c = _flat_colour(rng, kind)
        return Image.new("RGB", (n, n), tuple(int(v) for v in c)), c
    a = _flat_colour(rng, _BACKGROUNDS[rng.integers(0, 3)])
    b = _flat_colour(rng, _BACKGROUNDS[rng.integers(0, 3)])
    ramp = np.linspace(0.0, 1.0, n)[:, None, None]  # (n, 1, 1)
    grad = np.broadcast_to((a + (b - a) * ramp).astype(np.uint8), (n, n, 3))  # vertical
    if rng.random() < 0.5:
        grad = grad.transpose(1, 0, 2)  # horizontal
    return Image.fromarray(np.ascontiguousarray(grad)), (a + b) / 2


def _polygon(cx: float, cy: float, r: float, k: int, angle: float, inner: float = 0.0) -> list:
    """Regular k-gon, or a k-point star when `inner` (inner/outer radius ratio) > 0."""
    n = 2 * k if inner else k
    pts = []
    for i in range(n):
        rad = r * inner if inner and i % 2 else r
        a = angle - math.pi / 2 + 2 * math.pi * i / n  # first vertex points up
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx, cy, r, angle, fill) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(1, round(0.35 * r)))
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, r * 1.2, 4, angle + math.pi / 4), fill=fill)
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, r * 1.15, 4, angle), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.15, 3, angle), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, r * 1.2, 5, angle, inner=0.45), fill=fill)
    elif shape == "cross":
        w = 0.32 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:  # pragma: no cover - CLASSES is fixed
        raise ValueError(f"unknown shape {shape!r}")


SIZE_WORDS = ("small", "medium-sized", "large")
PLACE_WORDS = ("left", "middle", "right", "top", "centre", "bottom")


def caption_vocabulary() -> set[str]:
    """The content words of the demo's captions (`render_example`): colours, shapes, sizes, places,
    backgrounds. A prompt sharing none of them asks the demo model for something it never saw."""
    words = {*COLOURS, *(shape for _, shape in CLASSES), *_BACKGROUNDS, *PLACE_WORDS}
    return words | {part for w in SIZE_WORDS for part in w.split("-")}


def unknown_to_demo(prompt: str) -> bool:
    """True when `prompt` shares no content word with the demo's captions."""
    return not set(re.findall(r"[a-z]+", prompt.lower())) & caption_vocabulary()


def render_example(label: int, image_size: int, rng: np.random.Generator):
    """Render one example of class `label` -> (PIL RGB image, list of captions)."""
    colour, shape = CLASSES[label]
    n = image_size * _SUPERSAMPLE
    fill = np.asarray(COLOURS[colour], dtype=np.float64)
    for _ in range(20):  # re-draw low-contrast backgrounds so the shape stays visible
        bg_kind = _BACKGROUNDS[rng.integers(0, len(_BACKGROUNDS))]
        img, bg_mean = _background(rng, bg_kind, n)
        if np.abs(bg_mean - fill).mean() > 70:
            break
    # Shapes span 45-80 % of the image (version 3; was 32-58 %): at 16 px a shape then covers
    # enough latent tokens for a tiny U-ViT to learn its outline in minutes (docs/experiments.md).
    rel_r = rng.uniform(0.28, 0.4)
    r = rel_r * n
    cx, cy = rng.uniform(r * 1.2, n - r * 1.2, size=2)
    angle = rng.uniform(-0.35, 0.35)
    _draw_shape(ImageDraw.Draw(img), shape, cx, cy, r, angle, tuple(int(v) for v in fill))
    img = img.resize((image_size, image_size), resample=Image.BOX)  # 4x4 box average
    size_word = SIZE_WORDS[0 if rel_r < 0.32 else 1 if rel_r < 0.36 else 2]
    where = PLACE_WORDS[:3][min(2, int(3 * cx / n))]
    vert = PLACE_WORDS[3:][min(2, int(3 * cy / n))]
    captions = [
        f"a {size_word} {colour} {shape} on a {bg_kind} background",
        f"a {colour} {shape}",
        f"{size_word} {colour} {shape} near the {vert} {where} of the picture",
    ]
    return img, captions


def _write_split(
    stage: Path,
    split: str,
    coco_split: str,
    n: int,
    image_size: int,
    seed: int,
    image_ids: list[int],
    next_caption_id: int,
) -> tuple[int, int]:
    """Render `n` images per class for `split` into both layouts under `stage`."""
    split_id = {"train": 0, "val": 1}[split]
    coco_dir = stage / "coco" / coco_split
    coco_dir.mkdir(parents=True)
    images, anns, k = [], [], 0
    for label, name in enumerate(CLASS_NAMES):
        cls_dir = stage / "imagenet" / split / name
        cls_dir.mkdir(parents=True)
        for i in range(n):
            # Per-image seed: output is independent of iteration order and of n_per_class.
            rng = np.random.default_rng([seed, split_id, label, i])
            img, caps = render_example(label, image_size, rng)
            img.save(cls_dir / f"{name}_{i:05d}.png", optimize=False)
            iid = image_ids[k]
            k += 1
            fname = f"COCO_{coco_split}_{iid:012d}.jpg"
            img.save(coco_dir / fname, quality=95)
            images.append(
                {
                    "id": iid,
                    "file_name": fname,
                    "width": image_size,
                    "height": image_size,
                    # not in real COCO: the class, so the t2i demo can score samples by class
                    "label": label,
                    "class_name": name,
                }
            )
            for c in caps:
                anns.append({"image_id": iid, "id": next_caption_id, "caption": c})
                next_caption_id += 1
    ann_dir = stage / "coco" / "annotations"
    ann_dir.mkdir(exist_ok=True)
    info = {"description": "uvit_pipeline synthetic demo data", "version": str(DEMO_FORMAT_VERSION)}
    atomic_write_json(
        ann_dir / f"captions_{coco_split}.json",
        {"info": info, "licenses": [], "images": images, "annotations": anns},
    )
    return len(images), next_caption_id


def generate_demo_data(
    root: str | os.PathLike, n_per_class: int = 300, image_size: int = 32, seed: int = 0
) -> dict:
    """Write the seeded demo set under `root` (`imagenet/{train,val}/`, `coco/{train2014,val2014}/`).

    Skips work when `root/demo_meta.json` records the same parameters. Returns a summary dict.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    root = Path(root)
    n_val = max(2, n_per_class // 10)
    params = {
        "format_version": DEMO_FORMAT_VERSION,
        "n_per_class": int(n_per_class),
        "n_val_per_class": n_val,
        "image_size": int(image_size),
        "seed": int(seed),
        "classes": CLASS_NAMES,
    }
    summary = {
        "root": str(root),
        "imagenet_root": str(root / "imagenet"),
        "coco_root": str(root / "coco"),
        "classes": CLASS_NAMES,
        "n_train": n_per_class * len(CLASSES),
        "n_val": n_val * len(CLASSES),
        "image_size": int(image_size),
        "seed": int(seed),
    }
    meta_path = root / "demo_meta.json"
    if meta_path.is_file() and read_json(meta_path).get("params") == params:
        log.info("demo data already present at %s; skipping", root)
        return {**summary, "skipped": True, "seconds": 0.0}
    for sub in ("imagenet", "coco"):
        if (root / sub).exists() and not (root / sub / _MARKER).exists():
            raise FileExistsError(f"{root / sub} exists and was not written by the demo generator")
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    stage = root / f".demo-staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        # Disjoint, shuffled COCO ids so "sorted by image id" (§7.3) differs from class order.
        ids = (
            np.random.default_rng([seed, 99]).permutation(summary["n_train"] + summary["n_val"]) + 1
        ).tolist()
        _, next_cap = _write_split(
            stage, "train", "train2014", n_per_class, image_size, seed, ids[: summary["n_train"]], 1
        )
        _write_split(
            stage, "val", "val2014", n_val, image_size, seed, ids[summary["n_train"] :], next_cap
        )
        meta_path.unlink(missing_ok=True)  # from here on the old set is invalid
        for sub in ("imagenet", "coco"):
            (stage / sub / _MARKER).touch()
            shutil.rmtree(root / sub, ignore_errors=True)
            os.replace(stage / sub, root / sub)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    seconds = time.perf_counter() - t0
    atomic_write_json(meta_path, {"params": params, "summary": summary})
    log.info(
        "wrote %d demo images (x2 layouts) to %s in %.1f s",
        summary["n_train"] + summary["n_val"],
        root,
        seconds,
    )
    return {**summary, "skipped": False, "seconds": seconds}
