"""Chunked sampling: independent of the number of processes, resumable, quantised as the spec says."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from uvit_pipeline.errors import ChildFailed
from uvit_pipeline.launch import LaunchSpec, run_parallel
from uvit_pipeline.models import UViT
from uvit_pipeline.sampling import SamplingSpec
from uvit_pipeline.sampling.generate import collect, generate_samples, generate_to_dir, quantize
from uvit_pipeline.training.checkpoint import export_final

KWARGS = dict(
    img_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=2, num_heads=2, num_classes=5
)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = UViT(**KWARGS)
    config = {
        "model_kwargs": KWARGS,
        "schedule": "vp_continuous",
        "p_uncond": 0.1,
        "data": {"kind": "pixels"},
    }
    return export_final(tmp_path / "ckpt", model, model, config, {"steps": 0})


def spec_for(checkpoint, out_dir) -> dict:
    return {
        "checkpoint": str(checkpoint),
        "which": "ema",
        "n_samples": 10,
        "batch_size": 4,
        "sampler": "dpm_solver",
        "steps": 3,
        "cfg_scale": 0.5,
        "clip_x0": False,
        "seed": 7,
        "num_real_classes": 4,
        "null_label": 4,
        "device": "cpu",
        "autoencoder": None,
        "scale_factor": None,
        "decode_batch_size": 50,
        "out_dir": str(out_dir),
    }


def generate(spec: dict, **kwargs):
    """`generate_to_dir` for a spec written as a dict with its `out_dir`."""
    d = dict(spec)
    out_dir = d.pop("out_dir")
    return generate_to_dir(SamplingSpec.from_dict(d), out_dir, **kwargs)


def test_quantize_rounds_half_up_like_save_image():
    x = torch.tensor([-1.0, -2.0, 1.0, 3.0, 0.0, 2 * (0.7 / 255) - 1])
    assert quantize(x).tolist() == [0, 0, 255, 255, 128, 1]


def test_chunks_resume_and_do_not_depend_on_rank_split(checkpoint, tmp_path):
    one = spec_for(checkpoint, tmp_path / "one")
    generate(one, progress=False)
    images, labels = collect(one["out_dir"], 10, 4)
    assert images.shape == (10, 3, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (10,) and labels.max() < 4

    two = spec_for(checkpoint, tmp_path / "two")  # the same work split over 2 "ranks"
    generate(two, rank=1, world_size=2, progress=False)
    assert sorted(os.listdir(two["out_dir"])) == ["chunk-000001.npz"]
    generate(two, rank=0, world_size=2, progress=False)
    images2, labels2 = collect(two["out_dir"], 10, 4)
    np.testing.assert_array_equal(images, images2)
    np.testing.assert_array_equal(labels, labels2)

    # A crash lost chunk 1: only it is redone, identically.
    kept = os.path.getmtime(os.path.join(one["out_dir"], "chunk-000000.npz"))
    os.remove(os.path.join(one["out_dir"], "chunk-000001.npz"))
    with pytest.raises(FileNotFoundError, match="chunk-000001"):
        collect(one["out_dir"], 10, 4)
    generate(one, progress=False)
    assert os.path.getmtime(os.path.join(one["out_dir"], "chunk-000000.npz")) == kept
    np.testing.assert_array_equal(collect(one["out_dir"], 10, 4)[0], images)


def chunk_arrays(folder) -> dict:
    """Every array of every chunk file in `folder`, by (file, key)."""
    out = {}
    for path in sorted(Path(folder).glob("chunk-*.npz")):
        with np.load(path) as f:
            out.update({(path.name, k): f[k] for k in f.files})
    return out


@pytest.mark.slow
def test_two_processes_write_the_chunks_of_one(checkpoint, tmp_path):
    """`sample_part` under `run_parallel`: 2 CPU processes write the chunks 1 process writes, byte
    for byte (evaluation, guidance_sweep and generate all sample through it)."""
    ref = spec_for(checkpoint, tmp_path / "ref")
    generate(ref, progress=False)
    spec = spec_for(checkpoint, tmp_path / "multi")
    out = spec.pop("out_dir")
    run_parallel(
        LaunchSpec(num_processes=2, cpu=True),
        "uvit_pipeline.sampling.generate:sample_part",
        {"spec": spec, "out": out},
        work_dir=tmp_path / "launch",
    )
    one, two = chunk_arrays(ref["out_dir"]), chunk_arrays(out)
    assert len(one) == 6 and one.keys() == two.keys()  # 3 chunks: images, labels
    for key, a in one.items():
        assert a.dtype == two[key].dtype and a.tobytes() == two[key].tobytes(), key


@pytest.mark.slow
def test_a_rank_killed_during_sampling_resumes_chunk_by_chunk(checkpoint, tmp_path, monkeypatch):
    """Chunks of 2 of 10 samples: rank 0 makes 0, 2, 4 and rank 1 makes 1, 3; rank 1 is killed
    with SIGKILL after chunk 1. The rerun keeps every finished chunk and writes what 1 process
    writes."""
    root = Path(__file__).resolve().parents[2]  # the child imports tests.sampling.kill_entry
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    ref = {**spec_for(checkpoint, tmp_path / "ref"), "batch_size": 2}
    generate(ref, progress=False)
    spec = {**spec_for(checkpoint, tmp_path / "two"), "batch_size": 2}
    out = Path(spec.pop("out_dir"))
    two = LaunchSpec(num_processes=2, cpu=True)
    with pytest.raises(ChildFailed):
        run_parallel(
            two, "tests.sampling.kill_entry:sample_then_die",
            {"spec": spec, "out": str(out), "kill_rank": 1}, work_dir=tmp_path / "w1",
        )  # fmt: skip
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("chunk-*.npz")}
    assert "chunk-000001.npz" in done and "chunk-000003.npz" not in done
    entry = "uvit_pipeline.sampling.generate:sample_part"
    run_parallel(two, entry, {"spec": spec, "out": str(out)}, work_dir=tmp_path / "w2")
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("chunk-*.npz")}
    assert len(after) == 5 and all(after[name] == t for name, t in done.items())
    one, again = chunk_arrays(ref["out_dir"]), chunk_arrays(out)
    assert one.keys() == again.keys()
    for key, a in one.items():
        assert a.tobytes() == again[key].tobytes(), key


def test_labels_follow_given_class_frequencies(checkpoint, tmp_path):
    from uvit_pipeline.sampling.generate import chunk_labels

    d = spec_for(checkpoint, tmp_path / "freq")
    del d["out_dir"]
    spec = SamplingSpec.from_dict(d)
    uniform = torch.cat([chunk_labels(spec, k, 4) for k in range(50)])
    assert set(uniform.tolist()) == {0, 1, 2, 3}
    spec = spec.replace(label_probs=[0.0, 0.0, 1.0, 0.0])
    assert set(chunk_labels(spec, 0, 4).tolist()) == {2}
    spec = spec.replace(label_probs=[0.7, 0.1, 0.1, 0.1])
    drawn = torch.cat([chunk_labels(spec, k, 4) for k in range(250)])
    assert abs((drawn == 0).float().mean().item() - 0.7) < 0.05


def test_latent_checkpoint_needs_an_autoencoder_unless_told_not_to_decode(tmp_path):
    torch.manual_seed(0)
    kwargs = {**KWARGS, "in_chans": 4}
    model = UViT(**kwargs)
    config = {
        "model_kwargs": kwargs,
        "schedule": "discrete",
        "p_uncond": 0.1,
        "data": {"kind": "latent_moments", "scale_factor": 0.5},
    }
    ckpt = export_final(tmp_path / "ckpt", model, model, config, {"steps": 0})
    spec = {**spec_for(ckpt, tmp_path / "out"), "n_samples": 4, "sampler": "dpm_solver_pp"}
    with pytest.raises(ValueError, match="name the autoencoder"):
        generate(spec, progress=False)
    generate({**spec, "decode_latents": False}, progress=False)
    images, labels = collect(tmp_path / "out", 4, 4)
    assert images.shape == (4, 4, 8, 8) and images.dtype == np.uint8 and labels.shape == (4,)


def test_batched_guidance_equals_two_passes_in_float64():
    """One forward of 2B (cfg_batched) is the two-pass guidance of the official eval, up to rounding."""
    from uvit_pipeline.diffusion import VPSDE, make_eps_fn

    torch.manual_seed(0)
    model = UViT(**KWARGS).double().eval()
    x, t = torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.tensor([0.9, 0.5, 0.1])
    y, null = torch.tensor([0, 2, 3]), torch.full((3,), 4)
    kw = dict(cond=y, null_cond=null, cfg_scale=0.4)
    with torch.no_grad():
        two = make_eps_fn(model, VPSDE(), **kw)(x, t.double())
        one = make_eps_fn(model, VPSDE(), batched=True, **kw)(x, t.double())
    torch.testing.assert_close(one, two, rtol=0, atol=1e-12)
    assert not torch.equal(two, make_eps_fn(model, VPSDE(), cond=y)(x, t.double()))  # guided


def _sample(model, **kw):
    return generate_samples(
        model, VPSDE_(), n=4, batch_size=4, sample_shape=(3, 8, 8), sampler="dpm_solver",
        steps=3, labels=torch.tensor([0, 1, 2, 3]), null_label=4, cfg_scale=0.5, seed=1,
        progress=False, **kw,
    )  # fmt: skip


def VPSDE_():  # noqa: N802
    from uvit_pipeline.diffusion import VPSDE

    return VPSDE()


def test_sampling_precision_and_batched_guidance_options(checkpoint):
    torch.manual_seed(0)
    model = UViT(**KWARGS).eval()
    dtypes = []
    model.decoder_pred.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    fp32_two = _sample(model, cfg_batched=False)
    fp32_one = _sample(model, cfg_batched=True)
    assert np.abs(fp32_one.astype(int) - fp32_two.astype(int)).max() <= 1  # rounding only
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    bf16 = _sample(model, mixed_precision="bf16")  # autocast on the CPU
    assert set(dtypes) == {torch.bfloat16} and bf16.dtype == np.uint8 and bf16.shape == (4, 3, 8, 8)
    assert np.abs(bf16.astype(int) - fp32_two.astype(int)).mean() < 8  # same images, coarser
    dtypes.clear()
    auto = _sample(model, mixed_precision="auto")  # auto: no autocast on the CPU
    assert set(dtypes) == {torch.float32} and np.array_equal(auto, fp32_two)


def test_sampling_spec_precision_values():
    assert SamplingSpec(checkpoint="c", mixed_precision=False).mixed_precision == "no"  # YAML `no`
    assert SamplingSpec(checkpoint="c").mixed_precision == "auto"
    with pytest.raises(ValueError, match=r"mixed_precision must be one of .*got 'fp32'"):
        SamplingSpec(checkpoint="c", mixed_precision="fp32")
