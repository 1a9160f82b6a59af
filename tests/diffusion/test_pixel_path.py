"""The pixel-space path end to end against float64 re-derivations of the original (train.py/eval.py):
PNG folder -> feature store -> training batch (scaling, null-class dropping) -> LSimple with 999·t
(§4.1, §4.3, §7.1), and noise -> sampler -> uint8 -> grid (§5.1, §5.3) with an exact ε-oracle."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from uvit_pipeline.data import FeatureDataset
from uvit_pipeline.data.extract import extract_features
from uvit_pipeline.data.ingest import scan_imagenet_folder
from uvit_pipeline.diffusion import VPSDE, noise_prediction_loss
from uvit_pipeline.models import UViT
from uvit_pipeline.sampling.generate import generate_samples
from uvit_pipeline.sampling.grid import GUTTER, labelled_grid
from uvit_pipeline.training import TrainConfig
from uvit_pipeline.training.data import prepare_batch

from .reference import (
    RefVP,
    ref_drop_labels,
    ref_model_to_uint8,
    ref_pixels_to_model,
    ref_vp_train_loss,
)

SIZE = 8
MODEL = dict(
    img_size=SIZE, patch_size=2, in_chans=3, embed_dim=32, depth=2, num_heads=2, num_classes=11
)


def _folder(root, n_per_class=3, classes=("a", "b")):
    """ImageNet-layout folder of random RGB PNGs whose channels all differ."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / "train" / name).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(img, "RGB").save(root / "train" / name / f"{name}-{i}.png")
    return root


def test_training_batch_and_objective_match_the_original(tmp_path):
    raw = _folder(tmp_path / "raw")
    manifest, _ = scan_imagenet_folder(raw, workers=1, progress=False)
    store = extract_features(
        raw, manifest, tmp_path / "store", meta={"kind": "pixels"}, crop="adm",
        resolution=SIZE, workers=1, progress=False,
    )  # fmt: skip
    p_uncond, seed = 0.5, 3
    config = TrainConfig.from_dict(
        dict(model=MODEL, data=dict(path=str(store), random_flip=False), p_uncond=p_uncond)
    )
    assert config.null_label() == 10  # K = num_classes − 1 (§4.3)
    ds = FeatureDataset(store, random_flip=False, p_uncond=p_uncond, null_label=10, seed=seed)
    x0, y = prepare_batch(
        default_collate([ds[i] for i in range(len(ds))]), config, torch.device("cpu"), True
    )

    # §7.1: the PNG as read by PIL, x/127.5 − 1, CHW; labels = sorted class folder index.
    pngs = [np.asarray(Image.open(raw / p).convert("RGB")) for p in manifest["path"]]
    x_ref = ref_pixels_to_model(np.stack(pngs).transpose(0, 3, 1, 2))
    np.testing.assert_allclose(x0.double().numpy(), x_ref, rtol=0, atol=1e-6)
    # §4.3: each label dropped to the null class with probability p_uncond, per sample.
    uniforms = np.random.default_rng([seed]).random(len(ds))
    y_ref = ref_drop_labels(manifest["label"].to_numpy(), uniforms, p_uncond, 10)
    np.testing.assert_array_equal(y.numpy(), y_ref)
    assert {0, 1, 10} <= set(y.tolist())  # both real classes and the null class occur

    torch.manual_seed(0)
    nnet = UViT(**MODEL)
    loss = noise_prediction_loss(
        nnet, x0, VPSDE(), cond=y, generator=torch.Generator().manual_seed(5)
    )
    g = torch.Generator().manual_seed(5)  # the same draws: t ~ U[0, 1), then ε
    t, noise = torch.rand(len(x0), generator=g), torch.randn(x0.shape, generator=g)
    net64 = copy.deepcopy(nnet).double()

    def eps_net(x, ts, labels):
        with torch.no_grad():
            return net64(
                torch.from_numpy(x), torch.from_numpy(ts), torch.from_numpy(labels)
            ).numpy()

    ref = ref_vp_train_loss(eps_net, x_ref, t.double().numpy(), noise.double().numpy(), y.numpy())
    np.testing.assert_allclose(loss.detach().double().numpy(), ref, rtol=1e-4)


class Oracle(torch.nn.Module):
    """The exact ε of a one-image data set: (x − α_t x0)/σ_t, with t recovered from the network's
    time input 999·t (§4.1). A sampler that fed another time convention would miss the image."""

    def __init__(self, x0: np.ndarray):
        super().__init__()
        self.x0, self.ref = torch.from_numpy(x0), RefVP()
        self.labels = []

    def forward(self, x, net_t, y=None):
        self.labels.append(y)
        t = net_t.double() / 999.0
        a = torch.tensor([self.ref.alpha(float(v)) for v in t], dtype=torch.float64)
        s = torch.tensor([self.ref.sigma(float(v)) for v in t], dtype=torch.float64)
        a, s = a.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)
        return ((x.double() - a * self.x0) / s).to(x.dtype)


@pytest.mark.parametrize(
    ("sampler", "steps", "t_end", "levels"),
    [("dpm_solver", 20, 1e-4, 0), ("dpm_solver_pp", 20, 1e-3, 0), ("euler_maruyama", 1000, 0, 1)],
)
def test_sampling_an_oracle_returns_the_image_in_its_channel_order(sampler, steps, t_end, levels):
    image = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)
    x0 = ref_pixels_to_model(image)
    oracle, seed = Oracle(x0), 7
    out = generate_samples(
        oracle, VPSDE(), n=2, batch_size=2, sample_shape=(3, SIZE, SIZE), sampler=sampler,
        steps=steps, labels=torch.tensor([4, 4]), seed=seed, progress=False,
    )  # fmt: skip
    assert out.dtype == np.uint8 and out.shape == (2, 3, SIZE, SIZE)
    assert all(torch.equal(lab, torch.tensor([4, 4])) for lab in oracle.labels)
    if sampler == "euler_maruyama":
        expected = np.stack([image, image])  # the last step lands on t = 0
    else:
        # For one image ε is constant along the probability-flow ODE, so an exact solver ends at
        # α(t_end)·x0 + σ(t_end)·ε(x_T) (float64, §4.1), quantised as save_image (§5.3).
        ref = RefVP()
        x_T = torch.randn((2, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))
        eps = (x_T.double().numpy() - ref.alpha(1.0) * x0) / ref.sigma(1.0)
        expected = ref_model_to_uint8(ref.alpha(t_end) * x0 + ref.sigma(t_end) * eps)
    diff = np.abs(out.astype(int) - expected.astype(int))
    assert diff.max() <= levels + 1 and diff.mean() < 0.05 + levels * 0.5, diff.max()
    # The grid shows the sample as RGB rows × columns at its place (channel order kept).
    grid = np.asarray(labelled_grid(out[:1], 1, ["digit 4"], scale=1))
    np.testing.assert_array_equal(
        grid[GUTTER : GUTTER + SIZE, GUTTER : GUTTER + SIZE], out[0].transpose(1, 2, 0)
    )


def test_model_to_uint8_matches_quantize():
    from uvit_pipeline.sampling.generate import quantize

    v = torch.linspace(-1.2, 1.2, 4001, dtype=torch.float64)
    np.testing.assert_array_equal(quantize(v).numpy(), ref_model_to_uint8(v.numpy()))
