"""Caption-feature reading: the fp16 text store vs the original's one float32 `.npy` per caption.

Same synthetic data in both layouts (docs/reference.md §7.3: `{idx}_{k}.npy`, (77, 768) float32, 5-7 captions
per image): the contexts come from `extract_text_features` run with a random 0-layer BERT of hidden 768
(embeddings + LayerNorm, the MiniLM tokenizer), so the store is written by the real code path; the
per-file copy holds the same values in float32. Access pattern of training/FID sampling (§7.3): a batch of
random images, one random caption each.
  * original: one `np.load` per item (what the original `__getitem__` does), stacked into a batch;
  * store: `TextFeatures.random_caption_rows` + `read_rows` (sorted, one fancy index per shard).
Each is timed "warm" (files in the page cache) and "cold" (this benchmark's files evicted with
posix_fadvise(DONTNEED) before the run; other processes' caches are not touched).

    python benchmarks/coco_store.py                    # 5,000 captions: ~1.8 GB on disk while it runs
    python benchmarks/coco_store.py --captions 2000 --dir /big/tmp

Writes benchmarks/results/coco_store.json (merged with earlier runs, keyed by caption count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from uvit_pipeline.data.text_features import TextFeatures, extract_text_features
from uvit_pipeline.encoders.text import load_text_encoder, resolve_text_encoder

L, D = 77, 768  # §7.3: CLIP ViT-L/14 text features
COCO_CAPTIONS = {"train2014": 414_113, "val2014": 202_654}  # caption annotations of COCO 2014


def synthetic_manifest(n_captions: int, seed: int = 0) -> pd.DataFrame:
    """COCO-like manifest: mostly 5 captions per image, some 6-7 (§7.3)."""
    rng = np.random.default_rng(seed)
    counts = []
    while sum(counts) < n_captions:
        counts.append(int(rng.choice([5, 6, 7], p=[0.9, 0.08, 0.02])))
    counts[-1] -= sum(counts) - n_captions
    if counts[-1] == 0:
        counts.pop()
    words = ["a", "man", "dog", "red", "bus", "on", "the", "street", "with", "two", "people"]
    rows, cid = [], 0
    for i, n in enumerate(counts):
        caps = [" ".join(rng.choice(words, size=int(rng.integers(6, 16)))) for _ in range(n)]
        rows.append((f"train2014/{i}.jpg", i + 1, "train2014", caps, n, list(range(cid, cid + n))))
        cid += n
    cols = ["path", "image_id", "split", "captions", "n_captions", "caption_ids"]
    return pd.DataFrame(rows, columns=cols).assign(label=0)


def synthetic_encoder(root: Path):
    """A random 0-layer BERT of hidden 768 with the MiniLM tokenizer, saved and loaded like a real one."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=D, num_hidden_layers=0,
                     num_attention_heads=12, intermediate_size=4 * D)  # fmt: skip
    BertModel(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return load_text_encoder(root)


def write_per_file(tf: TextFeatures, out: Path) -> None:
    """The original layout: `{idx}_{k}.npy` float32 (77, 768) for caption k of image idx."""
    out.mkdir()
    store, offsets = tf.split("train")
    for idx in range(len(offsets) - 1):
        ctx = store.take("context", np.arange(offsets[idx], offsets[idx + 1])).astype(np.float32)
        for k, c in enumerate(ctx):
            np.save(out / f"{idx}_{k}.npy", c)


def evict(paths) -> None:
    """Drop these files' clean pages from the page cache (only ours)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_bytes(folder: Path) -> tuple[int, list[Path]]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files), files


def read_original(folder: Path, counts: np.ndarray, images: np.ndarray, batch: int, rng) -> int:
    for lo in range(0, len(images), batch):
        idx = images[lo : lo + batch]
        ks = (rng.random(len(idx)) * counts[idx]).astype(np.int64)
        out = np.stack([np.load(folder / f"{i}_{k}.npy") for i, k in zip(idx, ks, strict=True)])
        assert out.shape == (len(idx), L, D)
    return len(images)


def read_store(path: Path, images: np.ndarray, batch: int, rng) -> int:
    tf = TextFeatures(path)  # fresh: no shard mapped yet
    for lo in range(0, len(images), batch):
        rows = tf.random_caption_rows("train", images[lo : lo + batch], rng)
        out = tf.read_rows("train", rows)
        assert out.shape == (len(rows), L, D)
    return len(images)


def timed(fn) -> tuple[float, float]:
    """(wall s, process CPU s) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=4096, help="samples read per timed row")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--dir", default=None, help="scratch folder (default: system temp)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "coco_store.json"))
    args = parser.parse_args()
    need = args.captions * (L * D * 6 + 8192)  # fp32 files + fp16 store, with block slack
    if need > 2e9:
        raise SystemExit(
            f"--captions {args.captions} needs ~{need / 1e9:.1f} GB; keep it under 2 GB"
        )
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rng = np.random.default_rng(0)
    rows, sizes = [], {}
    scratch = Path(tempfile.mkdtemp(prefix="coco_store_bench_", dir=args.dir))
    try:
        manifest = synthetic_manifest(args.captions)
        counts = manifest["n_captions"].to_numpy()
        encoder = synthetic_encoder(scratch / "encoder")
        store = scratch / "store"
        wall, cpu = timed(lambda: extract_text_features(
            manifest, store, encoder, batch_size=256, shard_size=1024, prompts=["a dog"],
            progress=False))  # fmt: skip
        rows.append({"row": "write store (tokenize + 0-layer encoder + fp16 shards)",
                     "samples_per_s": args.captions / wall, "cpu_s": cpu, "wall_s": wall})  # fmt: skip
        per_file = scratch / "per_file"
        wall, cpu = timed(lambda: write_per_file(TextFeatures(store), per_file))
        rows.append({"row": "write per-file fp32 (from the store)",
                     "samples_per_s": args.captions / wall, "cpu_s": cpu, "wall_s": wall})  # fmt: skip
        store_bytes, store_files = disk_bytes(store / "train")
        file_bytes, files = disk_bytes(per_file)
        sizes = {
            "store_bytes_per_caption": store_bytes / args.captions,
            "per_file_bytes_per_caption": file_bytes / args.captions,
            "per_file_apparent_bytes_per_caption": (per_file / "0_0.npy").stat().st_size,
            "context_fp16_bytes": L * D * 2,
            "context_fp32_bytes": L * D * 4,
        }
        images = rng.integers(0, len(manifest), args.samples)
        for batch in args.batches:
            for cache in ("warm", "cold"):
                for name, paths, fn in (
                    ("original per-file np.load", files,
                     lambda b=batch: read_original(per_file, counts, images, b, rng)),
                    ("store read_rows (sorted)", store_files,
                     lambda b=batch: read_store(store, images, b, rng)),
                ):  # fmt: skip
                    if cache == "warm":
                        fn()  # fill the page cache
                    else:
                        os.sync()
                        evict(paths)
                    wall, cpu = timed(fn)
                    rows.append({"row": f"{name}, batch {batch}, {cache}",
                                 "samples_per_s": args.samples / wall, "cpu_s": cpu,
                                 "wall_s": wall})  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"{'row':<58} {'samples/s':>10} {'wall s':>8} {'cpu s':>8}")
    for r in rows:
        print(f"{r['row']:<58} {r['samples_per_s']:>10.0f} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f}")
    print(f"{'bytes per caption':<58} {'store':>10} {'per-file':>10}")
    print(f"{'  on disk (allocated blocks)':<58} {sizes['store_bytes_per_caption']:>10.0f} "
          f"{sizes['per_file_bytes_per_caption']:>10.0f}")  # fmt: skip
    extrapolated = {
        split: {"store_gb": n * sizes["store_bytes_per_caption"] / 1e9,
                "per_file_gb": n * sizes["per_file_bytes_per_caption"] / 1e9}
        for split, n in COCO_CAPTIONS.items()
    }  # fmt: skip
    for split, v in extrapolated.items():
        print(f"  {split} ({COCO_CAPTIONS[split]:,} captions): store {v['store_gb']:.1f} GB, "
              f"per-file {v['per_file_gb']:.1f} GB")  # fmt: skip

    entry = {
        "captions": args.captions,
        "samples_per_row": args.samples,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "sizes": sizes,
        "extrapolated_coco2014": extrapolated,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[f"{args.captions}_captions"] = entry
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(results, indent=2))
    os.replace(tmp_out, out)


if __name__ == "__main__":
    main()
