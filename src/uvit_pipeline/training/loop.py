"""The training program run by `accelerate launch` (docs/reference.md §4.4, §4.5).

`train(config)` works in-process too (one process, no launcher). Per step, §4.4:
zero_grad -> loss -> backward (scaled under fp16) -> optimizer.step -> lr_scheduler.step -> EMA -> step += 1.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .._io import StagingLock
from ..diffusion import get_schedule, noise_prediction_loss
from ..models import UViT, train_step_flops
from . import checkpoint as ckpt
from .config import TrainConfig
from .data_order import ResumableDataOrder
from .ema import create_ema, ema_update
from .monitor import JsonlWriter, param_hash, peak_flops, peak_memory_bytes, reset_peak_memory, sync

logger = logging.getLogger(__name__)
progress = logging.getLogger("uvit_pipeline.progress")  # launch.PROGRESS_LOGGER


@dataclass
class TrainObjects:
    """Everything one update touches; `nnet` is the prepared (DDP / compiled) module, `raw` its weights."""

    nnet: nn.Module
    raw: UViT
    ema: UViT
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule: object
    model_kwargs: dict


def warmup_lambda(warmup_steps: int):
    """§4.4 LR multiplier min(step / warmup, 1): the first update uses lr 0, no decay."""
    if warmup_steps == 0:
        return lambda step: 1.0
    return lambda step: min(step / warmup_steps, 1.0)


def make_optimizer(params, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over all parameters in one group, weight decay on everything (§4.4)."""
    kw = dict(
        lr=config.lr, betas=tuple(config.betas), eps=config.eps, weight_decay=config.weight_decay
    )
    if config.fused_adamw:
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except (RuntimeError, ValueError) as e:  # e.g. fused kernel missing on this device
            logger.warning(
                "fused AdamW unavailable on %s (%s); using the foreach kernel", device, e
            )
    return torch.optim.AdamW(params, **kw)


def build_train_objects(
    config: TrainConfig, accelerator: Accelerator, resume_state: dict | None = None
) -> TrainObjects:
    """Model (same init on every rank), fp32 EMA copy, AdamW, warmup LambdaLR; optionally restored."""
    kwargs = config.model_kwargs()
    torch.manual_seed(config.seed)  # identical init on all ranks, so the EMA copies agree too
    raw = UViT(**kwargs).to(accelerator.device)
    ema = create_ema(raw)
    optimizer = make_optimizer(raw.parameters(), config, accelerator.device)
    # Kept outside accelerator.prepare: AcceleratedScheduler would step num_processes times per update.
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(config.warmup_steps))
    if resume_state is not None:
        raw.load_state_dict(resume_state["nnet"], strict=True)
        ema.load_state_dict(resume_state["nnet_ema"], strict=True)
        optimizer.load_state_dict(resume_state["optimizer"])  # moves state to the params' device
        lr_scheduler.load_state_dict(resume_state["lr_scheduler"])
    nnet = torch.compile(raw) if config.compile else raw
    nnet, optimizer = accelerator.prepare(nnet, optimizer)
    if resume_state is not None and resume_state.get("scaler") and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(resume_state["scaler"])
    schedule = get_schedule(config.schedule)
    return TrainObjects(nnet, raw, ema, optimizer, lr_scheduler, schedule, kwargs)


def train_step(
    objs: TrainObjects, accelerator: Accelerator, x0: torch.Tensor, cond, ema_rate: float
) -> torch.Tensor:
    """One update in §4.4 order; returns this process's detached batch-mean loss."""
    objs.optimizer.zero_grad(set_to_none=True)
    # The prepared module runs under accelerate's autocast and returns fp32 (§4.4 mixed precision).
    loss = noise_prediction_loss(objs.nnet, x0, objs.schedule, cond=cond).mean()
    accelerator.backward(loss)
    objs.optimizer.step()
    objs.lr_scheduler.step()  # also when the fp16 scaler skipped the update (§4.4)
    ema_update(objs.ema, objs.raw, ema_rate)
    return loss.detach()


def prepare_batch(batch, config: TrainConfig, device: torch.device, conditional: bool):
    """Dataset batch (x, label | context) -> (x0 fp32 network input, labels / contexts or None), §4.5.

    Pixel items are already in [-1, 1]; latent items are moments (B, 8, h, w) from which a fresh
    posterior sample is drawn every step, in fp32 and outside autocast, then scaled.
    """
    x, c = batch
    x = x.to(device, non_blocking=True).float()
    if config.data.kind == "latent_moments":
        from ..encoders import sample_latents  # lazy: only latent runs need the encoders package

        x = sample_latents(x, config.data.scale_factor, None)
    if not conditional:
        return x, None
    c = c.to(device, non_blocking=True)
    return x, (c.float() if c.is_floating_point() else c.long())  # text contexts | class labels


def open_store(config: TrainConfig, accelerator: Accelerator):
    """Open and check the feature store before any training: layout, meta, shapes, identity,
    content (sha256 of every file, on the main process) and label range."""
    from ..data import FeatureStore  # lazy: keeps `import training` light

    store = FeatureStore(config.data.path)
    if config.data.expected_meta:
        store.verify_meta(config.data.expected_meta)
    if store.meta.get("kind") != config.data.kind:
        raise ValueError(
            f"training.data.kind is {config.data.kind!r} but store {store.root} holds "
            f"{store.meta.get('kind')!r} features"
        )
    _check_store_shape(store, config)
    if config.data.content_id and store.content_id != config.data.content_id:
        raise ValueError(
            f"training.data.content_id is {config.data.content_id!r} but store {store.root} "
            f"holds content {store.content_id!r}"
        )
    if accelerator.is_main_process:
        store.verify(progress=True)
    accelerator.wait_for_everyone()
    num_classes = config.model_kwargs().get("num_classes", -1)
    if isinstance(num_classes, int) and num_classes > 0:
        # With label dropping the last class index is the null class (§4.3), never a data label.
        store.check_labels(num_classes - 1 if config.p_uncond > 0 else num_classes)
    return store


def _check_resume_identity(path, state: dict, store) -> None:
    """Refuse to continue a state trained on other data (its recorded store content_id)."""
    recorded = ((state["state"].get("config") or {}).get("data") or {}).get("content_id")
    if not recorded:
        logger.warning("training state %s records no feature store identity; not checked", path)
    elif recorded != store.content_id:
        raise ValueError(
            f"training state {path} was trained on feature store content {recorded}, but "
            f"{store.root} holds content {store.content_id}: refusing to resume on different "
            "data. Train the new data in another run directory, or point training.data.path "
            "back at the original store."
        )


def _make_loader(
    config: TrainConfig, accelerator: Accelerator, start_step: int, store=None
) -> DataLoader:
    from ..data import FeatureDataset  # lazy: keeps `import training` light

    if store is None:
        store = open_store(config, accelerator)
    rank = accelerator.process_index
    # flips / label drops / caption draws differ per rank and per resume point (workers add their seed)
    seed = config.seed + 7919 * rank + start_step
    if config.data.text_path:
        from .text_data import text_dataset

        dataset = text_dataset(config, store, seed)
    else:
        dataset = FeatureDataset(
            store,
            random_flip=config.data.random_flip,
            p_uncond=config.p_uncond,
            null_label=config.null_label(),
            seed=seed,
        )
    order = ResumableDataOrder(
        len(dataset),
        config.batch_size,
        rank,
        accelerator.num_processes,
        config.seed,
        start_step,
    )
    return DataLoader(
        dataset,
        batch_size=config.batch_size // accelerator.num_processes,
        sampler=order,
        num_workers=config.data.num_workers,
        pin_memory=accelerator.device.type == "cuda",
        drop_last=True,
        persistent_workers=config.data.num_workers > 0,
    )


def _check_store_shape(store, config: TrainConfig) -> None:
    """Fail before training when the network input does not match the stored features."""
    kw = config.model_kwargs()
    if config.data.kind == "latent_moments":
        shape = store.fields["moments"][0]  # (V, 2·C, h, w): [orig(, flipped)] moments
        got = (shape[1] // 2, shape[2], shape[3])
        stored = store.meta.get("scale_factor")  # another scale is another latent space (§4.5)
        if stored is not None and not math.isclose(stored, config.data.scale_factor, rel_tol=1e-6):
            raise ValueError(
                f"training.data.scale_factor is {config.data.scale_factor} but latent store "
                f"{store.root} was made for scale_factor {stored}"
            )
    else:
        got = tuple(store.fields["x"][0])  # (C, H, W)
    want = (kw["in_chans"], kw["img_size"], kw["img_size"])
    if got != want:
        raise ValueError(
            f"model.in_chans/model.img_size give network inputs {want} but store {store.root} "
            f"yields {got} ({config.data.kind})"
        )


def _init_trackers(config: TrainConfig) -> Accelerator:
    # MLflow only when the parent passes a run. No config is logged: it
    # would clash with kedro-mlflow's params; the resolved config is an artifact in run_dir instead.
    use_mlflow = bool(os.environ.get("MLFLOW_RUN_ID"))
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        cpu=config.cpu,
        log_with="mlflow" if use_mlflow else None,
    )
    if use_mlflow:
        accelerator.init_trackers(os.environ.get("MLFLOW_EXPERIMENT_NAME", "uvit_pipeline"))
    return accelerator


def _report_progress(step: int, n_steps: int, loss: float, steps_s: float) -> None:
    """One line per log interval for the parent's log file (launch.PROGRESS_LOGGER)."""
    eta = (n_steps - step) / max(steps_s, 1e-9)
    progress.info(
        "step %d/%d (%.0f%%), loss %.4f, %.1f steps/s, ETA %d min %02d s",
        step, n_steps, 100 * step / n_steps, loss, steps_s, eta // 60, eta % 60,
    )  # fmt: skip


def train(config: TrainConfig) -> Path:
    """Train (resuming from the newest intact state by default) and return `run_dir/final`.

    The main process holds a `StagingLock` on `run_dir` for the whole run, so a second run of the
    same experiment stops with an error naming the holder instead of writing the same states.
    """
    accelerator = _init_trackers(config)
    config.validate(num_processes=accelerator.num_processes)
    lock = StagingLock(config.run_dir, "training run directory")
    if accelerator.is_main_process:
        lock.acquire()
    try:
        return _train(config, accelerator)
    finally:
        lock.release()


def _train(config: TrainConfig, accelerator: Accelerator) -> Path:
    text_identity = None
    if config.data.text_path:  # fail on a mismatched text store before loading anything
        from .text_data import verify_text_store

        text_identity = verify_text_store(config).identity
    device, is_main = accelerator.device, accelerator.is_main_process
    run_dir = Path(config.run_dir)
    ckpt_root = run_dir / "ckpts"
    if is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)

    store = open_store(config, accelerator)
    latest, state = (None, None)
    if config.resume:  # a corrupt newest state is skipped with a warning naming it
        latest, state = ckpt.load_latest_training_state(ckpt_root)
    if state is not None:
        _check_resume_identity(latest, state, store)
    start_step = int(state["state"]["step"]) if state else 0
    objs = build_train_objects(config, accelerator, state)
    del state
    # §4.4 seeds seed + rank; a resumed run re-seeds by step so its noise/t draws are fresh.
    set_seed(config.seed + start_step, device_specific=True)
    loader = _make_loader(config, accelerator, start_step, store)

    metrics = JsonlWriter(run_dir / "metrics.jsonl", enabled=is_main)
    events = JsonlWriter(run_dir / "events.jsonl", enabled=is_main)
    events.write(
        {
            "event": "start",
            "step": start_step,
            "resumed_from": str(latest) if latest else None,
            "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type.value),
        }
    )
    logger.info(
        "Training from step %d to %d on %d process(es), device %s",
        start_step,
        config.n_steps,
        accelerator.num_processes,
        device,
    )
    resolved = {**config.to_dict(), "model_kwargs": objs.model_kwargs}
    if text_identity is not None:  # which encoder's features the model was trained on
        resolved["text_encoder"] = text_identity
    resolved["data"]["content_id"] = store.content_id  # recorded in every state and the export
    per_rank = config.batch_size // accelerator.num_processes
    flops_step = train_step_flops(objs.model_kwargs, per_rank)
    peak = peak_flops(device, config.peak_tflops)
    kw = objs.model_kwargs
    conditional = kw.get("num_classes", -1) > 0 or kw.get("clip_dim") is not None
    if start_step >= config.n_steps:
        logger.info("State at step %d already reaches n_steps; exporting only", start_step)

    step, last_loss, t_start = start_step, None, time.time()
    loss_sum, n_loss = torch.zeros((), device=device), 0
    reset_peak_memory(device)
    t_log, step_log = time.time(), step
    batches = iter(loader)
    bar = tqdm(
        total=config.n_steps, initial=step, disable=not is_main, desc="train", dynamic_ncols=True
    )
    objs.nnet.train()
    while step < config.n_steps:
        x0, cond = prepare_batch(next(batches), config, device, conditional)
        loss_sum += train_step(objs, accelerator, x0, cond, config.ema_rate)
        n_loss += 1
        step += 1
        bar.update(1)
        if step % config.log_interval == 0 or step == config.n_steps:
            sync(device)
            dt = max(time.time() - t_log, 1e-9)
            last_loss = accelerator.reduce(loss_sum / n_loss, reduction="mean").item()
            steps_s = (step - step_log) / dt
            record = {
                "step": step,
                "loss": last_loss,
                "lr": objs.lr_scheduler.get_last_lr()[0],
                "steps_per_s": steps_s,
                "images_per_s": steps_s * config.batch_size,
                "peak_mem_bytes": peak_memory_bytes(device),
            }
            if peak is not None:
                record["mfu"] = flops_step * steps_s / peak
            metrics.write(record)
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if is_main:
                _report_progress(step, config.n_steps, last_loss, steps_s)
            loss_sum.zero_()
            reset_peak_memory(device)
            n_loss, t_log, step_log = 0, time.time(), step
        if step % config.save_interval == 0 or step == config.n_steps:
            _save_state(config, accelerator, objs, step, resolved, ckpt_root, events)
    bar.close()

    # Equal hashes on every rank show that DDP kept the replicas (and their EMAs) in sync.
    hashes = gather_object(
        [
            {
                "rank": accelerator.process_index,
                "nnet": param_hash(objs.raw),
                "nnet_ema": param_hash(objs.ema),
            }
        ]
    )
    wall = time.time() - t_start
    trained = step - start_step
    summary = {
        "steps": step,
        "start_step": start_step,
        "final_loss": last_loss,
        "wall_time_s": wall,
        "images_per_s": trained * config.batch_size / wall if trained else None,
        "num_processes": accelerator.num_processes,
        "rank_param_hashes": hashes,
    }
    final = run_dir / "final"
    if is_main:
        ckpt.export_final(final, objs.raw, objs.ema, resolved, summary)
        events.write({"event": "end", "step": step, "final": str(final)})
    metrics.close()
    events.close()
    accelerator.wait_for_everyone()
    # Deliberately no accelerator.end_training(): its MLflow tracker would end the parent's run.
    return final


def _save_state(config, accelerator, objs, step, resolved, ckpt_root, events) -> None:
    if accelerator.is_main_process:
        path = ckpt.save_training_state(
            ckpt_root,
            step,
            objs.raw,
            objs.ema,
            objs.optimizer,
            objs.lr_scheduler,
            {"config": resolved},
            scaler=accelerator.scaler,
            keep_last=config.keep_last,
        )
        events.write({"event": "checkpoint", "step": step, "path": str(path)})
    accelerator.wait_for_everyone()
