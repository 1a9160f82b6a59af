"""Caption features for text-to-image training (§7.3): a streamed, resumable, fp16 text store.

Layout of a text store directory (docs/data.md):
  meta.json             kind "text_context", encoder identity, max_length, dtype, splits, complete (written last)
  <split>/              a FeatureStore: context ((L, D) float16), label ((), int64) = the image's row in the
                        image feature store; one row per caption, sorted by (image row, caption order);
                        manifest columns caption_id, image_id, caption, image_label (the
                        image's class: 0 for real COCO, the class for the demo set)
  <split>/offsets.npy   int64 (n_images + 1,): captions of image i are rows offsets[i]:offsets[i+1]
  empty_context.npy     float32 (L, D): encoding of "" — the null context of guidance, not zeros (§4.3)
  prompts.json          visualisation prompts; prompt_contexts.npy float32 (n_prompts, L, D)
The original stores one float32 `{idx}_{k}.npy` per caption (§7.3); fp16 halves that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from uvit_pipeline.errors import UserFacingError

from .._io import StagingLock, atomic_write, atomic_write_json, read_json
from ..launch import LaunchSpec, Part, run_parallel
from .extract import cpu_threads, load_block, save_block
from .feature_store import FeatureStore, FeatureStoreIncomplete
from .store_writer import FeatureStoreWriter

if TYPE_CHECKING:  # the reader must not need transformers
    from ..encoders.text import TextEncoder

log = logging.getLogger(__name__)

KIND = "text_context"
MAX_LENGTH = 77  # §7.3
FORMAT_VERSION = 1
# §7.3: the fixed visualisation prompts of the original (training grids use the first 10).
COCO_VIS_PROMPTS = [
    "A green train is coming down the tracks.",
    "A group of skiers are preparing to ski down a mountain.",
    "A small kitchen with a low ceiling.",
    "A group of elephants walking in muddy water.",
    "A living area with a television and a table.",
    "A road with traffic lights, street lights and cars.",
    "A bus driving in a city area with traffic signs.",
    "A bus pulls over to the curb close to an intersection.",
    "A group of people are walking and one is holding an umbrella.",
    "A baseball player taking a swing at an incoming ball.",
    "A city street line with brick buildings and trees.",
    "A close up of a plate of broccoli and sauce.",
]


class TextEncoderMismatch(UserFacingError, ValueError):
    """A text store was made with other encoder weights than the caller's."""


def store_split(split: str) -> str:
    """Directory name of a COCO split in the store: "train2014" -> "train", "val2014" -> "val"."""
    return re.sub(r"\d{4}$", "", split) or split


def _check_identity(where: Path, stored: Mapping, expected: Mapping) -> None:
    keys = [k for k in ("sha256", "hidden_size", "max_length") if stored.get(k) != expected.get(k)]
    if keys:
        raise TextEncoderMismatch(
            f"text store {where} was made with text encoder {stored.get('name')!r} (sha256 "
            f"{stored.get('sha256')}), not with {expected.get('name')!r} (sha256 "
            f"{expected.get('sha256')}); differing: {keys}. Use the store's encoder, or extract the "
            "text features again into another directory"
        )


def _plan(manifest: pd.DataFrame, image_rows: Mapping | None) -> list[tuple[str, pd.DataFrame]]:
    """Per split (first-appearance order): the manifest rows in image-store row order, validated."""
    missing = {"split", "image_id", "captions", "caption_ids"} - set(manifest.columns)
    if missing:
        raise ValueError(
            f"manifest lacks columns {sorted(missing)} (expected a scan_coco manifest)"
        )
    splits = list(dict.fromkeys(manifest["split"]))
    image_rows = dict(image_rows or {})
    unknown = [k for k in image_rows if k not in splits and k not in map(store_split, splits)]
    if unknown:
        raise ValueError(f"image_rows: unknown splits {unknown}; the manifest has {splits}")
    plan = []
    for split in splits:
        sub = manifest[manifest["split"] == split].reset_index(drop=True)
        ids = image_rows.get(split, image_rows.get(store_split(split)))
        if ids is not None:  # follow the image feature store's row order
            ids = [int(i) for i in ids]
            pos = pd.Index(sub["image_id"])
            if not pos.is_unique or len(set(ids)) != len(ids):
                raise ValueError(f"image_rows[{split!r}]: image ids must be unique")
            absent = [i for i in ids if i not in pos]
            if absent:
                raise ValueError(
                    f"image_rows[{split!r}]: image ids {absent[:5]} not in the manifest"
                )
            sub = sub.iloc[pos.get_indexer(ids)].reset_index(drop=True)
        for r in sub.itertuples(index=False):
            caps, cids = list(r.captions), list(r.caption_ids)
            bad = not caps or len(caps) != len(cids)
            if bad or not all(isinstance(c, str) and c.strip() for c in caps):
                raise ValueError(
                    f"manifest: image {r.image_id} ({split}) needs non-empty captions matching "
                    f"caption_ids, got {caps!r} / {cids!r}"
                )
        plan.append((split, sub))
    return plan


def _digest(sub: pd.DataFrame) -> str:
    """sha1 of (image id, caption id, caption) in store order: a changed manifest cannot resume."""
    h = hashlib.sha1()
    for r in sub.itertuples(index=False):
        h.update(
            json.dumps(
                [int(r.image_id), [int(c) for c in r.caption_ids], list(r.captions)]
            ).encode()
        )
    return h.hexdigest()


def _caption_rows(sub: pd.DataFrame, offsets: np.ndarray, start: int) -> Iterator[tuple]:
    """(image row, caption id, image id, caption, image class) for store rows start.., in order."""
    first = int(np.searchsorted(offsets, start, side="right") - 1)
    classes = sub["label"] if "label" in sub else pd.Series(0, index=sub.index)
    for i in range(first, len(sub)):
        caps, cids = sub["captions"].iat[i], sub["caption_ids"].iat[i]
        for k in range(max(0, start - int(offsets[i])), len(caps)):
            yield i, int(cids[k]), int(sub["image_id"].iat[i]), str(caps[k]), int(classes.iat[i])


def _encode(encoder: TextEncoder, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    # transformers takes seconds to import: only text models need it
    from ..encoders.text import encode_prompts

    out = [
        encode_prompts(encoder, texts[i : i + batch_size], max_length).cpu().numpy()
        for i in range(0, len(texts), batch_size)
    ]
    return out[0] if len(out) == 1 else np.concatenate(out)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr))


def _open_split(
    out: Path, split: str, sub: pd.DataFrame, meta: dict, fields: dict, shard_size: int
):
    """(writer, offsets, split info) of one split's caption store; the writer checks its meta."""
    counts = sub["captions"].map(len).to_numpy(dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    info = {"source": split, "num_images": len(sub), "num_captions": int(offsets[-1]),
            "captions_sha1": _digest(sub)}  # fmt: skip
    writer = FeatureStoreWriter(out / store_split(split), {**meta, **info}, fields, shard_size)
    return writer, offsets, info


# -- data-parallel encoding --------------------------------------------------------------------
# Each split's captions are cut into blocks of `shard_size` store rows (one block = one shard,
# whatever the number of processes); rank r of W encodes blocks r, r+W, ... of the work list (the
# empty and visualisation prompts first, then every split's missing blocks) into one file each,
# and the caller merges them in order (as `extract.extract_features` does for images).
BLOCKS = "blocks"
EXTRAS = "extras.npz"  # the encoded empty prompt and visualisation prompts
ENTRY = "uvit_pipeline.data.text_features:extract_blocks"


def _block_file(blocks: Path, split: str, k: int) -> Path:
    return blocks / (EXTRAS if split == "" else f"{split}-{k:06d}.npz")


def _write_blocks(
    captions: Mapping[str, tuple[list[int], list[str]]],
    blocks: Path,
    todo: list,
    part: Part,
    *,
    encoder: TextEncoder,
    prompts: list[str],
    max_length: int,
    batch_size: int,
    block_size: int,
    progress: bool,
) -> None:
    """This process's share of `todo` ([split, block]; split "" = the extras): each block's fp16
    contexts as one file, written atomically, encoded in batches of `batch_size` of its own
    captions; blocks whose file exists are skipped."""
    mine = [todo[i] for i in part.blocks(len(todo))]

    def size(split: str, k: int) -> int:
        n = len(captions[split][0]) if split else 0
        return min(n, (k + 1) * block_size) - k * block_size if split else 0

    desc = "text features" if part.world == 1 else f"text features (rank 0 of {part.world})"
    bar = tqdm(total=sum(size(s, k) for s, k in mine), unit="cap", desc=desc,
               disable=not (progress and part.is_main))  # fmt: skip
    for split, k in mine:
        path = _block_file(blocks, split, k)
        if path.is_file():
            bar.update(size(split, k))
            continue
        if split == "":
            save_block(path, {
                "empty": _encode(encoder, [""], max_length, 1)[0],
                "prompts": _encode(encoder, prompts, max_length, batch_size),
            })  # fmt: skip
            continue
        ids, texts = captions[split]
        lo, hi = k * block_size, k * block_size + size(split, k)
        ctx = _encode(encoder, texts[lo:hi], max_length, batch_size).astype(np.float16)
        if not np.isfinite(ctx).all():  # fp16 overflow or a broken encoder
            bad = np.flatnonzero(~np.isfinite(ctx).reshape(len(ctx), -1).all(axis=1))
            raise ValueError(
                f"text store split {split}: non-finite text features for caption ids "
                f"{[ids[lo + i] for i in bad[:5]]}"
            )
        save_block(path, {"context": ctx})
        bar.update(hi - lo)
    bar.close()


def extract_blocks(payload: dict, part: Part) -> None:
    """Entry of `launch.run_parallel`: this process's blocks of a text store
    (`extract_text_features` writes `payload`), with its own text encoder on `part.device`."""
    import torch

    from ..encoders.text import load_text_encoder, text_encoder_identity

    p = payload
    captions = {}
    for split, path in p["captions"].items():
        table = pd.read_parquet(path)
        captions[split] = (table["caption_id"].tolist(), table["caption"].tolist())
    with cpu_threads(part.device):
        encoder = load_text_encoder(p["encoder"], device=part.device, dtype=torch.float32)
        identity = text_encoder_identity(encoder, p["max_length"])
        if identity["sha256"] != p["encoder_sha256"]:
            raise TextEncoderMismatch(
                f"text encoder {p['encoder']!r} loaded on {part.device} has weights sha256 "
                f"{identity['sha256']}, the store records {p['encoder_sha256']}: did its files "
                "change during the extraction?"
            )
        settings = {
            k: p[k] for k in ("prompts", "max_length", "batch_size", "block_size", "progress")
        }
        _write_blocks(captions, Path(p["blocks"]), p["todo"], part, encoder=encoder, **settings)


def _launch_blocks(
    captions: Mapping, blocks: Path, todo: list, settings: dict, encoder_spec: str, sha256: str,
    launch: LaunchSpec, device: str,
) -> None:  # fmt: skip
    """Every process of `launch` writes its share of `todo` (`extract_blocks`); the captions go to
    it as one parquet file per split beside the blocks."""
    blocks = blocks.absolute()  # the same on every machine of a shared filesystem
    files = {}
    for split, (ids, texts) in captions.items():
        table = pd.DataFrame({"caption_id": ids, "caption": texts})
        path = blocks / f"captions-{split}.parquet"
        atomic_write(path, lambda f, t=table: t.to_parquet(f, index=False))
        files[split] = str(path)
    payload = {"captions": files, "blocks": str(blocks), "todo": todo,
               "encoder": str(encoder_spec), "encoder_sha256": sha256, **settings}  # fmt: skip
    run_parallel(launch, ENTRY, payload, work_dir=blocks, device=device, what="text features")


def _merge_split(w: FeatureStoreWriter, rows: list[tuple], blocks: Path, block_size: int) -> None:
    """Feed a split's blocks into its writer from its resume row on, deleting each block file once
    its shard is committed; close the store."""
    split = w.root.name
    if not w.complete:
        for k in range(w.resume_row // block_size, -(-len(rows) // block_size)):
            path = _block_file(blocks, split, k)
            ctx = load_block(path)["context"]
            batch = rows[k * block_size : (k + 1) * block_size]
            if len(ctx) != len(batch):
                raise ValueError(f"{path}: {len(ctx)} contexts for the {len(batch)} captions")
            w.add(
                {"context": ctx, "label": np.array([b[0] for b in batch], dtype=np.int64)},
                [
                    {"caption_id": b[1], "image_id": b[2], "caption": b[3], "image_label": b[4]}
                    for b in batch
                ],
            )
            if w.resume_row >= k * block_size + len(batch):  # its shard is committed
                path.unlink()
    w.close()


def extract_text_features(
    manifest: pd.DataFrame,
    out_dir: str | os.PathLike,
    encoder: TextEncoder,
    *,
    batch_size: int = 256,
    shard_size: int = 1024,
    prompts: Sequence[str] = COCO_VIS_PROMPTS,
    image_rows: Mapping[str, Sequence[int]] | None = None,
    max_length: int = MAX_LENGTH,
    progress: bool = True,
    encoder_spec: str | None = None,
    launch: LaunchSpec | None = None,
    device: str = "cpu",
) -> Path:
    """Encode every caption of a COCO manifest into the text store `out_dir` (layout: module doc).

    `image_rows` maps a split ("train2014" or "train") to the COCO image ids of its image feature store
    rows, in row order (default: manifest order); labels are positions in that list. Re-running resumes
    from the committed shards and the finished blocks; a store of other encoder weights or other
    captions is refused.

    `encoder` encodes in this process, unless `encoder_spec` (its catalog value: a directory or a
    Hugging Face id) is given: then every process of `launch` (default: one, this one;
    `launch.run_parallel`) loads its own copy on `device` (the CPU, or one GPU each) and encodes its
    blocks, and `encoder` only gives the identity the store records. Blocks of `shard_size` captions,
    encoded in batches of `batch_size` of their own captions, make the store the same, byte for
    byte, for any number of processes.
    """
    # transformers takes seconds to import: only text models need it
    from ..encoders.text import text_encoder_identity

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(
            f"prompts: expected a non-empty list of non-empty strings, got {prompts!r}"
        )
    launch = launch or LaunchSpec()
    if encoder_spec is None and (launch.num_processes > 1 or launch.num_machines > 1):
        raise ValueError(
            "an encoder object encodes in this process only: pass encoder_spec= to spread the "
            "encoding over the processes of a launch"
        )
    plan = _plan(manifest, image_rows)
    identity = text_encoder_identity(encoder, max_length)
    out = Path(out_dir)
    metas = {p: read_json(p) for p in
             [out / "meta.json", *(out / store_split(s) / "meta.json" for s, _ in plan)]
             if p.is_file()}  # fmt: skip
    for path, meta in metas.items():  # refuse before anything is written
        _check_identity(path.parent, meta["encoder"], identity)
    old_meta = metas.get(out / "meta.json")
    if old_meta is not None and set(old_meta["splits"]) != {store_split(s) for s, _ in plan}:
        raise ValueError(
            f"text store {out} holds splits {sorted(old_meta['splits'])}; this manifest has "
            f"{[s for s, _ in plan]}: extract into another directory"
        )
    hidden = identity["hidden_size"]
    fields = {"context": ((max_length, hidden), "float16"), "label": ((), "int64")}
    split_meta = {"kind": f"{KIND}_split", "encoder": identity, "max_length": max_length,
                  "dtype": "float16"}  # fmt: skip
    blocks = out / BLOCKS
    with StagingLock(out, "text feature store"):
        opened = []
        try:
            for s, sub in plan:
                opened.append(_open_split(out, s, sub, split_meta, fields, shard_size))
            # every check passed; readers must not trust the store while it is rewritten
            if old_meta is not None:
                atomic_write_json(out / "meta.json", {**old_meta, "complete": False})
            rows = {w.root.name: list(_caption_rows(sub, o, 0))
                    for (w, o, _), (_, sub) in zip(opened, plan, strict=True)}  # fmt: skip
            blocks.mkdir(parents=True, exist_ok=True)
            _block_file(blocks, "", 0).unlink(missing_ok=True)  # the prompts may have changed
            todo = [["", 0]] + [
                [w.root.name, k]
                for w, _, _ in opened
                if not w.complete
                for k in range(w.resume_row // shard_size, -(-len(rows[w.root.name]) // shard_size))
            ]
            captions = {s: ([r[1] for r in v], [r[3] for r in v]) for s, v in rows.items()}
            settings = {"prompts": prompts, "max_length": max_length, "batch_size": batch_size,
                        "block_size": shard_size, "progress": progress}  # fmt: skip
            if encoder_spec is None:
                _write_blocks(captions, blocks, todo, Part(0, 1, device), encoder=encoder,
                              **settings)  # fmt: skip
            else:
                _launch_blocks(captions, blocks, todo, settings, encoder_spec, identity["sha256"],
                               launch, device)  # fmt: skip
            splits_meta = {}
            for w, offsets, info in opened:
                _merge_split(w, rows[w.root.name], blocks, shard_size)
                _save_npy(w.root / "offsets.npy", offsets)
                size = sum(f.stat().st_size for f in w.root.iterdir() if f.is_file())
                splits_meta[w.root.name] = {**info, "bytes_per_caption": size / int(offsets[-1])}
        finally:
            for w, _, _ in opened:
                w.release()  # a no-op after close; after a failure the committed shards stay
        extras = load_block(_block_file(blocks, "", 0))
        _save_npy(out / "empty_context.npy", extras["empty"])
        atomic_write_json(out / "prompts.json", prompts)
        _save_npy(out / "prompt_contexts.npy", extras["prompts"])
        atomic_write_json(out / "meta.json", {
            "kind": KIND, "format_version": FORMAT_VERSION, "encoder": identity,
            "max_length": max_length, "hidden_size": hidden, "dtype": "float16",
            "splits": splits_meta, "num_prompts": len(prompts), "complete": True,
        })  # fmt: skip
        shutil.rmtree(blocks, ignore_errors=True)  # every block is in the store
    log.info("text store %s: %s", out, {k: v["num_captions"] for k, v in splits_meta.items()})
    return out


class CaptionSplit(NamedTuple):
    """The captions of one split: `store` rows grouped per image by `offsets` (unpacks as a pair)."""

    store: FeatureStore
    offsets: np.ndarray  # (n_images + 1,) int64

    @property
    def num_images(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        """Captions per image, (n_images,)."""
        return np.diff(self.offsets)

    def contexts(self, rows) -> np.ndarray:
        """Features of caption rows as float32 (n, L, D), in the given order (sorted reads)."""
        return self.store.take("context", np.asarray(rows, dtype=np.int64)).astype(np.float32)


class TextFeatures:
    """The one reader of a complete text store: per-split caption stores, offsets, the null and
    prompt contexts, and the encoder identity training and sampling check against."""

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no text feature store at {self.root} (missing meta.json)")
        try:
            self._meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path} is not valid JSON: {err}") from err
        if self._meta.get("kind") != KIND:
            raise ValueError(f"{self.root}: meta kind is {self._meta.get('kind')!r}, not {KIND!r}")
        if not self._meta.get("complete"):
            raise FeatureStoreIncomplete(
                f"text feature store {self.root} is incomplete; re-run the extraction to resume it"
            )
        encoder = self._meta.get("encoder")
        if not isinstance(encoder, dict) or "hidden_size" not in encoder:
            raise ValueError(f"{meta_path}: 'encoder' must be a mapping with 'hidden_size'")
        self._splits: dict[str, CaptionSplit] = {}

    @property
    def meta(self) -> dict:
        return json.loads(json.dumps(self._meta))

    @property
    def encoder(self) -> dict:
        """Identity of the text encoder that made the features (name, hidden_size, sha256, ...)."""
        return dict(self._meta["encoder"])

    @property
    def identity(self) -> dict:
        """What a checkpoint records about its text features: encoder identity + token count."""
        return {**self.encoder, "max_length": self.max_length}

    @property
    def hidden_size(self) -> int:
        return int(self._meta["encoder"]["hidden_size"])

    @property
    def max_length(self) -> int:
        return int(self._meta["max_length"])

    @property
    def context_shape(self) -> tuple[int, int]:
        return (self.max_length, self.hidden_size)

    @property
    def splits(self) -> list[str]:
        return list(self._meta["splits"])

    def split(self, name: str) -> CaptionSplit:
        """Captions of split `name` ("train"/"val" or "train2014"/"val2014"), checked once."""
        key = store_split(name)
        if key not in self._meta["splits"]:
            raise KeyError(f"text store {self.root} has no split {name!r}; it has {self.splits}")
        if key not in self._splits:
            self._splits[key] = self._open_split(key)
        return self._splits[key]

    def _open_split(self, key: str) -> CaptionSplit:
        root = self.root / key
        store = FeatureStore(root)
        field = store.fields.get("context")
        if field is None or field[0] != self.context_shape:
            raise ValueError(
                f"text store {root}: field 'context' must have shape {self.context_shape} "
                f"(max_length, encoder hidden size), got {None if field is None else field[0]}"
            )
        path = root / "offsets.npy"
        if not path.is_file():
            raise FileNotFoundError(f"text store split {root} lacks offsets.npy")
        offsets = np.load(path, allow_pickle=False)
        ok = (
            offsets.ndim == 1
            and offsets.dtype.kind in "iu"
            and len(offsets) == self._meta["splits"][key]["num_images"] + 1
            and offsets[0] == 0
            and offsets[-1] == len(store)
            and np.all(np.diff(offsets) >= 0)
        )
        if not ok:
            raise ValueError(
                f"{path}: offsets must be a non-decreasing int array from 0 to {len(store)} "
                f"(caption rows) with one entry per image + 1, got shape {offsets.shape}"
            )
        offsets = offsets.astype(np.int64)
        expected = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        if not np.array_equal(store.read_all("label"), expected):
            raise ValueError(
                f"text store {root}: caption labels disagree with offsets.npy (rows must be "
                "sorted by image row, label = image row)"
            )
        return CaptionSplit(store, offsets)

    def _load_array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(f"text store {self.root} lacks {name}")
        arr = np.load(path, allow_pickle=False)
        if arr.shape != shape:
            raise ValueError(f"{path}: expected shape {shape}, got {arr.shape}")
        return arr.astype(np.float32)

    @property
    def empty_context(self) -> np.ndarray:
        """float32 (L, D): the encoded empty prompt (the null context of guidance)."""
        return self._load_array("empty_context.npy", self.context_shape)

    @property
    def prompts(self) -> list[str]:
        prompts = read_json(self.root / "prompts.json")
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{self.root / 'prompts.json'}: expected a list of prompt strings")
        return prompts

    @property
    def prompt_contexts(self) -> np.ndarray:
        """float32 (n_prompts, L, D): the visualisation prompts' features."""
        return self._load_array("prompt_contexts.npy", (len(self.prompts), *self.context_shape))

    def caption_rows(self, split: str, image_row: int) -> range:
        offsets = self.split(split).offsets
        return range(int(offsets[image_row]), int(offsets[image_row + 1]))

    def captions_of(self, split: str, image_row: int) -> list[str]:
        """The caption texts of image `image_row` (annotation-file order)."""
        r = self.caption_rows(split, image_row)
        return self.split(split).store.manifest["caption"].iloc[r.start : r.stop].tolist()

    def random_caption_rows(self, split: str, image_rows, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn caption row per image row (§7.3: a random caption per access)."""
        offsets = self.split(split).offsets
        image_rows = np.asarray(image_rows, dtype=np.int64)
        counts = offsets[image_rows + 1] - offsets[image_rows]
        return offsets[image_rows] + (rng.random(len(image_rows)) * counts).astype(np.int64)

    def read_rows(self, split: str, rows) -> np.ndarray:
        """Contexts (len(rows), L, D) float16 of caption rows, in the given order (sorted reads)."""
        return self.split(split).store.take("context", rows)

    def verify_encoder(self, expected_identity: Mapping) -> None:
        """Raise `TextEncoderMismatch` unless the store was made with these encoder weights."""
        _check_identity(self.root, self._meta["encoder"], expected_identity)
