"""The training program run by `accelerate launch` (docs/reference.md §4.4, §4.5).

`train(config)` works in-process too (one process, no launcher). Per step, §4.4:
zero_grad -> loss -> backward (scaled under fp16) -> optimizer.step -> lr_scheduler.step -> EMA -> step += 1.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from torch import nn
from tqdm.auto import tqdm

from .._io import StagingLock
from ..diffusion import get_schedule, noise_prediction_loss
from ..diffusion.schedules import NoiseSchedule
from ..models import UViT, train_step_flops
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import check_resume_identity, make_loader, open_store, prepare_batch, verify_text_store
from .ema import create_ema, ema_update, initial_weight_share
from .monitor import (
    JsonlWriter,
    param_hash,
    peak_flops,
    peak_memory_bytes,
    read_jsonl,
    reset_peak_memory,
    sync,
)
from .stop import StopOnSignal, TrainingStopped

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
    schedule: NoiseSchedule
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


class SteadyEta:
    """Time left from the average rate over a long window: the last `window` fraction of the run's
    steps, or everything since this attempt started while it has not run that many (a rate over the
    last log interval swings with every checkpoint save and evaluation)."""

    def __init__(self, n_steps: int, start_step: int, t0: float, window: float = 0.2):
        self.n_steps, self.span = n_steps, max(1, int(window * n_steps))
        self.points: list[tuple[float, int]] = [(t0, start_step)]

    def update(self, step: int, t: float) -> float:
        """Seconds left after `step` at time `t`."""
        self.points.append((t, step))
        while len(self.points) > 2 and self.points[1][1] <= step - self.span:
            self.points.pop(0)
        t_old, s_old = self.points[0]
        rate = (step - s_old) / max(t - t_old, 1e-9)
        return (self.n_steps - step) / max(rate, 1e-9)


def _report_progress(step: int, n_steps: int, loss: float, steps_s: float, eta: float) -> None:
    """One line per log interval for the parent's log file (launch.PROGRESS_LOGGER); `eta` from
    `SteadyEta`."""
    eta = int(eta)
    progress.info(
        "step %d/%d (%.0f%%), loss %.4f, %.1f steps/s, ETA %d min %02d s",
        step, n_steps, 100 * step / n_steps, loss, steps_s, eta // 60, eta % 60,
    )  # fmt: skip


def _state_at_n_steps(ckpt_root: Path, n_steps: int, latest: Path) -> tuple[Path, dict]:
    """The run went past `n_steps` (n_steps is not part of a run's identity, so a larger value
    continues a run): its kept state at exactly `n_steps`, else an error; never the longer model."""
    for path in ckpt.list_checkpoints(ckpt_root):
        if path.name == f"{n_steps}.ckpt":
            return path, ckpt.load_training_state(path)
    raise ValueError(
        f"training.n_steps={n_steps} is below the step this run has reached ({latest}), and no "
        f"state at step {n_steps} is kept; set training.n_steps to at least that step to continue "
        "the run, or train in another paths.train_state"
    )


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
    if state is not None and int(state["state"]["step"]) > config.n_steps:
        latest, state = _state_at_n_steps(ckpt_root, config.n_steps, latest)
    if state is not None:
        check_resume_identity(latest, state, store)
    start_step = int(state["state"]["step"]) if state else 0
    objs = build_train_objects(config, accelerator, state)
    del state
    # §4.4 seeds seed + rank; a resumed run re-seeds by step so its noise/t draws are fresh.
    set_seed(config.seed + start_step, device_specific=True)
    loader = make_loader(config, accelerator, start_step, store)

    metrics = JsonlWriter(run_dir / "metrics.jsonl", enabled=is_main)
    events = JsonlWriter(run_dir / "events.jsonl", enabled=is_main)
    events.write(
        {
            "event": "start",
            "step": start_step,
            "resumed_from": str(latest) if latest else None,
            "mlflow_run_id": os.environ.get("MLFLOW_RUN_ID"),  # the tracking run of this attempt
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
    peak = peak_flops(device, config.peak_tflops)  # MFU = FLOP/s of the step / the device's peak
    peak_rate = None if peak is None else train_step_flops(objs.model_kwargs, per_rank) / peak
    kw = objs.model_kwargs
    conditional = kw.get("num_classes", -1) > 0 or kw.get("clip_dim") is not None
    if start_step >= config.n_steps:
        logger.info("State at step %d already reaches n_steps; exporting only", start_step)
    warn_short_ema(config)

    step, last_loss, t_start = start_step, None, time.time()
    loss_sum, n_loss = torch.zeros((), device=device), 0
    reset_peak_memory(device)
    t_log, step_log = time.time(), step
    eta = SteadyEta(config.n_steps, step, t_start)
    # From here SIGTERM / SIGUSR1 stop the run at the next step boundary with its state saved; the
    # loader's workers, forked by iter(), inherit the handler.
    with StopOnSignal(device, accelerator.num_processes) as stopper:
        batches = iter(loader)
        bar = tqdm(  # smoothing=0: tqdm's ETA from the average rate since this attempt started
            total=config.n_steps,
            initial=step,
            disable=not is_main,
            desc="train",
            dynamic_ncols=True,
            smoothing=0,
        )
        objs.nnet.train()
        saved = start_step  # the step of the newest state on disk (start_step: resumed from it)
        while step < config.n_steps:
            x0, cond = prepare_batch(next(batches), config, device, conditional)
            loss_sum += train_step(objs, accelerator, x0, cond, config.ema_rate)
            n_loss += 1
            step += 1
            bar.update(1)
            if step % config.log_interval == 0 or step == config.n_steps:
                window = (step - step_log, max(time.time() - t_log, 1e-9), loss_sum / n_loss)
                last_loss = _log_interval(
                    config, accelerator, objs, step, window, metrics, peak_rate
                )
                if is_main:
                    _report_progress(
                        step,
                        config.n_steps,
                        last_loss,
                        window[0] / window[1],
                        eta.update(step, time.time()),
                    )
                bar.set_postfix(loss=f"{last_loss:.4f}")
                loss_sum.zero_()
                reset_peak_memory(device)
                n_loss, t_log, step_log = 0, time.time(), step
            if step % config.save_interval == 0 or step == config.n_steps:
                _save_state(config, accelerator, objs, step, resolved, ckpt_root, events)
                saved = step
            if step < config.n_steps and stopper.poll():
                bar.close()
                if saved != step:
                    _save_state(config, accelerator, objs, step, resolved, ckpt_root, events)
                path = ckpt_root / f"{step}.ckpt"
                events.write({"event": "stopped", "step": step, "signal": stopper.signal_name})
                metrics.close()
                events.close()
                # No rank exits before the record is written: the parent (or srun, whose
                # --kill-on-bad-exit ends the other nodes) reads it to report the stop.
                accelerator.wait_for_everyone()
                raise TrainingStopped(stopper.signal_name, step, config.n_steps, str(path))
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
        # MLflow runs of every attempt (a resumed training has several), the current one last
        "mlflow_run_ids": _attempt_runs(run_dir) if is_main else [],
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


def warn_short_ema(config: TrainConfig) -> float:
    """Warn when the run is too short for its EMA rate: more than 10% of the EMA weights (which
    sampling and evaluation use by default) would still be the random initialisation."""
    share = initial_weight_share(config.ema_rate, config.n_steps)
    if share > 0.1:
        logger.warning(
            "training.ema_rate %s over %d steps leaves %.0f%% of the initial random weights in the "
            "EMA weights that sampling uses: its samples will be worse than the raw weights'. For "
            "a short run choose ema_rate <= %.4g (10%% left), or sample with the raw weights",
            config.ema_rate, config.n_steps, 100 * share, 0.1 ** (1 / config.n_steps),
        )  # fmt: skip
    return share


def _attempt_runs(run_dir: Path) -> list[str]:
    """The MLflow run ids the attempts of this training logged into, in order, without repeats."""
    ids = [e.get("mlflow_run_id") for e in read_jsonl(run_dir / "events.jsonl")]
    return list(dict.fromkeys(i for i in ids if i))


def _log_interval(config, accelerator, objs, step, window, metrics, peak_rate) -> float:
    """One metrics record (loss averaged over ranks, lr, throughput, memory, MFU) to metrics.jsonl,
    MLflow (through accelerate's tracker) and the progress log; returns the loss."""
    steps, seconds, mean_loss = window
    sync(accelerator.device)
    loss = accelerator.reduce(mean_loss, reduction="mean").item()
    steps_s = steps / seconds
    record = {
        "step": step,
        "loss": loss,
        "lr": objs.lr_scheduler.get_last_lr()[0],
        "steps_per_s": steps_s,
        "images_per_s": steps_s * config.batch_size,
        "peak_mem_gib": peak_memory_bytes(accelerator.device) / 2**30,
    }
    if peak_rate is not None:
        record["mfu"] = peak_rate * steps_s
    metrics.write(record)
    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
    return loss


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
