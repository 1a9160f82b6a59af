"""Optimizer/LR rule, EMA math, the resumable sampler (docs/reference.md §4.4) and batch reads."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader

from uvit_pipeline.data import (
    BatchReads,
    CaptionedFeatureDataset,
    FeatureDataset,
    FeatureStore,
    TextFeatures,
)
from uvit_pipeline.training import TrainConfig
from uvit_pipeline.training.data import make_loader
from uvit_pipeline.training.data_order import ResumableDataOrder
from uvit_pipeline.training.ema import create_ema, ema_update
from uvit_pipeline.training.loop import make_optimizer, warmup_lambda

from .. import text_fixtures
from .conftest import tiny_config, write_latent_store, write_pixel_store


def _lrs_used(warmup: int, n: int, lr: float = 1.0) -> list[float]:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(warmup))
    used = []
    for _ in range(n):
        used.append(opt.param_groups[0]["lr"])  # lr the coming update uses
        p.grad = torch.ones(1)
        opt.step()
        sched.step()
    return used


def test_warmup_first_update_uses_lr_zero():
    # update k (1-indexed) uses lr·(k−1)/warmup, then constant (§4.4)
    assert _lrs_used(warmup=4, n=7, lr=2.0) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert _lrs_used(warmup=0, n=2) == [1.0, 1.0]


def test_optimizer_one_group_decay_on_everything(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path, betas=(0.99, 0.99), lr=3e-4)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    opt = make_optimizer(model.parameters(), cfg, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert len(g["params"]) == 4  # weights, biases and norm params alike
    assert (g["weight_decay"], g["betas"], g["eps"]) == (0.03, (0.99, 0.99), 1e-8)


def test_ema_copy_and_update_math():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = create_ema(model)
    assert all(not p.requires_grad for p in ema.parameters())
    assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), model.parameters(), strict=True))
    before = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema_update(ema, model, rate=0.9)
    for e, b, m in zip(ema.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * m)
    ema_update(ema, model, rate=0.0)  # rate 0 = exact copy (how the original initialises)
    assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), model.parameters(), strict=True))


def _take(sampler, k: int) -> list[int]:
    it = iter(sampler)
    return [next(it) for _ in range(k)]


def test_sampler_resumes_and_shards_consistently():
    n, gb = 10, 4
    full = _take(ResumableDataOrder(n, gb, 0, 1, seed=3), 5 * gb)
    # every epoch is a permutation
    assert sorted(full[:n]) == list(range(n))
    # resuming at step 2 continues exactly where step 2 starts
    assert _take(ResumableDataOrder(n, gb, 0, 1, seed=3, start_step=2), 3 * gb) == full[2 * gb :]
    # two ranks together read the same global batches as one process
    r0 = _take(ResumableDataOrder(n, gb, 0, 2, seed=3), 2 * 3)
    r1 = _take(ResumableDataOrder(n, gb, 1, 2, seed=3), 2 * 3)
    merged = [x for s in range(3) for x in r0[2 * s : 2 * s + 2] + r1[2 * s : 2 * s + 2]]
    assert merged == full[: 3 * gb]
    with pytest.raises(ValueError, match="not divisible"):
        ResumableDataOrder(n, 5, 0, 2, seed=0)


def test_short_run_with_a_slow_ema_warns(caplog):
    from uvit_pipeline.training.ema import initial_weight_share
    from uvit_pipeline.training.loop import warn_short_ema

    # The EMA keeps rate^n of the initialisation: 0.9999 over 2,200 steps keeps 80%.
    assert initial_weight_share(0.9999, 2200) == pytest.approx(0.8025, abs=1e-4)
    with caplog.at_level("WARNING", logger="uvit_pipeline.training.loop"):
        assert warn_short_ema(TrainConfig(n_steps=2200, ema_rate=0.9999)) > 0.8
    assert "80% of the initial random weights" in caplog.text and "ema_rate <= 0.999" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="uvit_pipeline.training.loop"):
        warn_short_ema(TrainConfig(n_steps=3000, ema_rate=0.995))  # the demo: 3e-7 left
        warn_short_ema(TrainConfig(n_steps=500_000, ema_rate=0.9999))  # the paper
    assert caplog.text == ""


def _item_loader(dataset, order, per_rank):
    """The loader as it read before batch reads: item by item, collated by torch."""
    return DataLoader(dataset, batch_size=per_rank, sampler=order, drop_last=True)


@pytest.mark.parametrize("kind", ["pixels", "latent", "captioned"])
def test_batch_reads_equal_item_reads_step_for_step(tmp_path, kind):
    """make_loader's batch reads yield, at every step of a resumed run, the same tensors as reading
    and collating the same items one by one with the same RNG stream (flip, label/caption drops)."""
    if kind == "pixels":
        store = FeatureStore(write_pixel_store(tmp_path / "s", n=10, num_classes=3))
        make = lambda: FeatureDataset(store, True, p_uncond=0.4, null_label=3, seed=5)  # noqa: E731
    elif kind == "latent":
        store = FeatureStore(write_latent_store(tmp_path / "s", n=10))
        make = lambda: FeatureDataset(store, True, p_uncond=0.4, null_label=3, seed=5)  # noqa: E731
    else:
        store = FeatureStore(text_fixtures.write_latent_store(tmp_path / "s"))
        text = TextFeatures(text_fixtures.write_text_store(tmp_path / "t"))
        make = lambda: CaptionedFeatureDataset(  # noqa: E731
            store, text.split("train"), text.empty_context, False, p_uncond=0.4, seed=5
        )
    per_rank, start = 3, 2  # a rank of 2 at a resumed step: each batch crosses an epoch boundary
    order = lambda: ResumableDataOrder(len(store), 6, 1, 2, seed=3, start_step=start)  # noqa: E731
    items = iter(_item_loader(make(), order(), per_rank))
    batches = iter(
        DataLoader(
            BatchReads(make()), batch_size=None, sampler=BatchSampler(order(), per_rank, True)
        )
    )
    for _ in range(7):
        (xi, ci), (xb, cb) = next(items), next(batches)
        assert xi.dtype == xb.dtype and ci.dtype == cb.dtype
        assert torch.equal(xi, xb) and torch.equal(ci, cb)


def test_make_loader_reads_batches_in_the_resumable_order(tmp_path):
    store = write_pixel_store(tmp_path / "s", n=10)
    cfg = tiny_config(tmp_path / "run", store, batch_size=4)
    cfg.data.random_flip = False
    acc = types.SimpleNamespace(process_index=0, num_processes=1, device=torch.device("cpu"))
    loader = make_loader(cfg, acc, start_step=3, store=FeatureStore(store))
    assert isinstance(loader.dataset, BatchReads)
    rows = _take(ResumableDataOrder(10, 4, 0, 1, seed=cfg.seed, start_step=3), 8)
    x = FeatureStore(store).take("x", rows)
    it = iter(loader)
    first, second = next(it), next(it)
    want = torch.from_numpy(x).float() / 127.5 - 1.0
    assert torch.equal(torch.cat([first[0], second[0]]), want)
