"""`evaluation`: checkpoint -> samples -> metric -> labelled grid -> HTML report, on the demo chain's
checkpoint (pixels) and on a few-step latent model decoded through the tiny VAE (§4.5, §5.3)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uvit_pipeline.data.demo import CLASS_NAMES
from uvit_pipeline.data.feature_store import FeatureStore
from uvit_pipeline.pipelines.evaluation import create_pipeline
from uvit_pipeline.pipelines.train_uvit.nodes import make_train_config
from uvit_pipeline.sampling import class_names, collect
from uvit_pipeline.sampling.grid import labelled_grid
from uvit_pipeline.training import load_checkpoint_dir, train

from ..conftest import run, with_section, write_checkpoint

MODEL_INPUTS = ("uvit_checkpoint", "image_features", "feature_network", "reference_stats")


def inputs_of(chain: dict, **overrides) -> dict:
    base = {k: chain[k] for k in MODEL_INPUTS}
    return {
        **base,
        "text_features": None,
        "clip_model": None,
        "autoencoder": None,
        "decoder": None,
        "run_overrides": {},
        **overrides,
    }


def expected_grid_size(rows: int, columns: int, names: list[str], size: int, scale: int):
    """The size `labelled_grid` gives `rows` rows of `columns` images with these row labels."""
    blank = np.zeros((rows * columns, 3, size, size), np.uint8)
    return labelled_grid(blank, rows, names, scale=scale).size


@pytest.fixture(scope="module")
def evaluated(demo_chain, demo_params):
    params = with_section(demo_params, "evaluation", save_adm_npz=True)
    overrides = {"evaluation": {"cfg_scale": 3.0}}
    out = run(create_pipeline(), inputs_of(demo_chain, run_overrides=overrides), params)
    return {**out, "params": params}


def test_metrics_are_demo_fd_and_class_accuracy_never_fid(evaluated):
    metrics = evaluated["evaluation_metrics"]
    assert set(metrics) == {"demo_fd", "demo_class_accuracy"}  # a classifier FD is not an FID
    assert np.isfinite(metrics["demo_fd"]) and metrics["demo_fd"] >= 0
    n = evaluated["params"]["evaluation"]["n_samples"]
    assert 0 <= metrics["demo_class_accuracy"] <= 1
    assert round(metrics["demo_class_accuracy"] * n, 6).is_integer()  # share of the 8 samples


def test_generated_samples_hold_chunks_spec_and_an_adm_npz(evaluated, demo_chain):
    folder = Path(evaluated["generated_samples"])
    spec = json.loads((folder / "spec.json").read_text())
    assert (spec["n_samples"], spec["batch_size"], spec["cfg_scale"]) == (8, 4, 3.0)
    assert spec["which"] == "ema" and spec["checkpoint"] == str(
        Path(demo_chain["uvit_checkpoint"]).resolve()
    )
    assert (spec["num_real_classes"], spec["null_label"]) == (10, 10)  # 10 classes + null (§4.3)
    assert len(list(folder.glob("chunk-*.npz"))) == 2
    images, labels = collect(folder, 8, 4)
    assert images.shape == (8, 3, 32, 32) and images.dtype == np.uint8 and images.std() > 0
    # ADM evaluator format (§5.3): uint8 NHWC images + labels of real classes (never the null one)
    with np.load(folder / "samples_adm.npz") as npz:
        adm, adm_labels = npz["arr_0"], npz["arr_1"]
    assert adm.dtype == np.uint8 and adm.shape == (8, 32, 32, 3)
    assert np.array_equal(adm, images.transpose(0, 2, 3, 1))
    assert np.array_equal(adm_labels, labels) and adm_labels.min() >= 0 and adm_labels.max() < 10


def test_sampling_resumes_chunk_by_chunk(evaluated, demo_chain):
    folder = Path(evaluated["generated_samples"])
    kept = folder / "chunk-000000.npz"
    lost = folder / "chunk-000001.npz"
    with np.load(lost) as f:
        before = f["images"]
    kept_mtime = kept.stat().st_mtime_ns
    lost.unlink()  # an interrupted run
    node = create_pipeline().only_nodes("sample_for_evaluation")
    again = run(node, inputs_of(demo_chain), evaluated["params"])["generated_samples"]
    assert Path(again) == folder and kept.stat().st_mtime_ns == kept_mtime  # not sampled again
    with np.load(lost) as f:
        assert np.array_equal(f["images"], before)  # the chunk's own seed: the same samples


@pytest.mark.slow
def test_two_processes_sample_and_score_as_one(evaluated, demo_chain, tmp_path):
    """`launcher.num_processes: 2` (CPU): the same chunks, byte for byte, and the same metrics."""
    params = with_section(evaluated["params"], "launcher", num_processes=2)
    params = with_section(params, "paths", staging=str(tmp_path / "staging"))
    nodes = create_pipeline().only_nodes("sample_for_evaluation", "score_samples")
    out = run(nodes, inputs_of(demo_chain), params)
    assert out["evaluation_metrics"] == evaluated["evaluation_metrics"]
    for name in ("chunk-000000.npz", "chunk-000001.npz"):
        with (
            np.load(Path(out["generated_samples"]) / name) as two,
            np.load(Path(evaluated["generated_samples"]) / name) as one,
        ):
            assert two.files == one.files
            assert all(two[k].tobytes() == one[k].tobytes() for k in one.files)


def test_grid_has_one_labelled_row_per_class(evaluated):
    grid = evaluated["sample_grid"]
    assert isinstance(grid, Image.Image) and grid.mode == "RGB"
    e = evaluated["params"]["evaluation"]
    columns, scale = e["grid_columns"], e["grid_scale"]
    # the class names come from the store's manifest (sorted folder names of the demo set)
    assert grid.size == expected_grid_size(10, columns, sorted(CLASS_NAMES), 32, scale)
    unlabelled = labelled_grid(np.zeros((10 * columns, 3, 32, 32), np.uint8), 10, None, scale=scale)
    assert grid.size[1] > unlabelled.size[1]  # a text line under every row
    first = np.asarray(grid)[2 : 2 + 32 * scale, 2 : 2 + 32 * scale]
    assert first.std() > 0  # a sample, not a blank cell


def test_report_holds_metrics_and_embedded_images(evaluated):
    html = evaluated["run_report"]
    metrics = evaluated["evaluation_metrics"]
    for name, value in metrics.items():
        assert f"<code>{name}</code></td><td>{value:.4g}</td>" in html
    assert "<code>fid</code>" not in html and "Not an FID" in html
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == 2  # the sample grid and the checkpoint's loss curve
    embedded = Image.open(io.BytesIO(base64.b64decode(images[0])))
    assert np.array_equal(np.asarray(embedded), np.asarray(evaluated["sample_grid"]))
    assert "evaluation.cfg_scale" in html  # the command-line override is listed


def test_scoring_refuses_statistics_of_another_network(evaluated, demo_chain, demo_params):
    stats = {**demo_chain["reference_stats"], "network": "inception_v3_fid"}
    inputs = {
        "generated_samples": evaluated["generated_samples"],
        "reference_stats": stats,
        "feature_network": demo_chain["feature_network"],
        "clip_model": None,
        "text_features": None,
    }
    with pytest.raises(
        ValueError, match="computed with inception_v3_fid.*re-run the fid_reference"
    ):
        run(create_pipeline().only_nodes("score_samples"), inputs, demo_params)


def test_guidance_needs_a_model_trained_with_label_dropping(demo_chain, demo_params, tmp_path):
    kwargs = {
        "img_size": 32,
        "patch_size": 4,
        "in_chans": 3,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "num_classes": 10,
    }
    ckpt = write_checkpoint(tmp_path / "no-null-class", kwargs, p_uncond=0.0)
    node = create_pipeline().only_nodes("sample_for_evaluation")
    assert demo_params["evaluation"]["cfg_scale"] > 0
    with pytest.raises(
        ValueError, match=r"evaluation.cfg_scale: a CFG scale > 0 \(3.0\).*training.p_uncond > 0"
    ):
        run(node, inputs_of(demo_chain, uvit_checkpoint=ckpt), demo_params)
    # without guidance it samples: every class index is a real class
    params = with_section(demo_params, "evaluation", cfg_scale=0.0, n_samples=4)
    params = with_section(params, "paths", staging=str(tmp_path / "staging"))
    folder = run(node, inputs_of(demo_chain, uvit_checkpoint=ckpt), params)["generated_samples"]
    spec = json.loads((Path(folder) / "spec.json").read_text())
    assert (spec["num_real_classes"], spec["null_label"]) == (10, None)


def test_train_frequencies_need_the_training_store(demo_chain, demo_params):
    params = with_section(demo_params, "evaluation", labels="train_frequencies")
    node = create_pipeline().only_nodes("sample_for_evaluation")
    with pytest.raises(ValueError, match="evaluation.labels=train_frequencies.*image_features"):
        run(node, inputs_of(demo_chain, image_features=None), params)


# --- the latent path ------------------------------------------------------------------------------

LATENT_UVIT = {
    "img_size": 4,
    "patch_size": 2,
    "in_chans": 4,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 11,
}
LATENT_TRAIN = {
    "schedule": "discrete",
    "mixed_precision": "no",
    "batch_size": 4,
    "lr": 1e-3,
    "warmup_steps": 1,
    "n_steps": 3,
    "ema_rate": 0.5,
    "p_uncond": 0.25,
    "log_interval": 1,
    "save_interval": 3,
    "seed": 0,
    "data": {"random_flip": True, "num_workers": 0},
}


@pytest.fixture(scope="module")
def latent_model(latent_chain, tmp_path_factory):
    """A few steps of the discrete (Stable Diffusion) schedule on the latent store (§4.2)."""
    cfg = make_train_config(
        LATENT_UVIT,
        LATENT_TRAIN,
        {"cpu": True},
        latent_chain["params"]["features"],
        latent_chain["image_features"],
        str(tmp_path_factory.mktemp("latent-runs")),
    )
    return str(train(cfg))


def test_latent_model_trained_on_the_store(latent_model):
    final = Path(latent_model)
    config, ema, raw = load_checkpoint_dir(final)
    assert config["schedule"] == "discrete"
    assert config["data"]["kind"] == "latent_moments" and config["data"]["scale_factor"] == 0.18215
    assert ema.keys() == raw.keys() and ema["patch_embed.proj.weight"].shape[1] == 4
    summary = json.loads((final / "summary.json").read_text())
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
    rows = (final.parent / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3 and all(np.isfinite(json.loads(r)["loss"]) for r in rows)


def test_latent_samples_decode_through_the_vae_with_guided_dpm_solver_pp(
    latent_chain, latent_model, demo_chain, vae_dir
):
    params = with_section(
        latent_chain["params"],
        "evaluation",
        sampler="dpm_solver_pp",
        steps=3,
        cfg_scale=0.4,
        n_samples=6,
        batch_size=4,
        labels="train_frequencies",
        save_adm_npz=True,
        grid_columns=1,
        grid_scale=1,
    )
    inputs = inputs_of(
        demo_chain,
        uvit_checkpoint=latent_model,
        image_features=latent_chain["image_features"],
        autoencoder=str(vae_dir),
    )
    out = run(create_pipeline(), inputs, params)
    metrics = out["evaluation_metrics"]
    assert np.isfinite(metrics["demo_fd"]) and "fid" not in metrics
    folder = Path(out["generated_samples"])
    spec = json.loads((folder / "spec.json").read_text())
    assert (spec["sampler"], spec["cfg_scale"]) == ("dpm_solver_pp", 0.4)
    assert spec["autoencoder"] == str(vae_dir) and spec["scale_factor"] == 0.18215
    with np.load(folder / "samples_adm.npz") as npz:
        images, labels = npz["arr_0"], npz["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (6, 32, 32, 3)  # decoded, not 4x4 latents
    assert images.std() > 0
    # labels drawn with the store's class frequencies: only classes the store holds (§3.3)
    store_labels = set(FeatureStore(latent_chain["image_features"]).read_all("label").tolist())
    assert set(labels.tolist()) <= store_labels and len(store_labels) < 10
    # one grid row per class the store has images of, never a row for a class it lacks
    n_store = max(store_labels) + 1
    names = class_names(latent_chain["image_features"], n_store)
    assert out["sample_grid"].size == expected_grid_size(n_store, 1, names, 32, 1)


def test_latent_model_without_an_autoencoder_is_refused(latent_chain, latent_model, demo_chain):
    node = create_pipeline().only_nodes("sample_for_evaluation")
    inputs = inputs_of(demo_chain, uvit_checkpoint=latent_model)
    with pytest.raises(ValueError, match="latent model: the catalog entry `autoencoder`"):
        run(node, inputs, latent_chain["params"])


def test_fid_is_named_after_the_protocol():
    """`fid` only with the paper's sample count and guidance (§3.3), otherwise a name that says what
    differs; the demo's distance keeps its own name."""
    from uvit_pipeline.pipelines._sampling import metric_name
    from uvit_pipeline.sampling import SamplingSpec

    guided = SamplingSpec(checkpoint="c", n_samples=50_000, cfg_scale=0.4, null_label=1000)
    assert metric_name("fid", guided) == "fid"
    assert metric_name("fid", guided.replace(n_samples=10_000)) == "fid10k"
    assert metric_name("fid", guided.replace(cfg_scale=0.0)) == "fid_noguidance"
    assert metric_name("fid", guided.replace(cfg_scale=0.0, null_label=None)) == "fid"
    text = SamplingSpec(checkpoint="c", n_samples=30_000, cfg_scale=1.0, text_features="t")
    assert metric_name("fid", text) == "fid"
    assert metric_name("demo_fd", guided.replace(n_samples=8)) == "demo_fd"


def test_uniform_labels_only_draw_the_classes_the_store_has(tmp_path):
    """A model with 10 real classes trained on a folder of 3 (the demo on one's own images) is
    evaluated on those 3 classes; a store with all 10 keeps the plain uniform draw."""
    from uvit_pipeline.data import FeatureStoreWriter
    from uvit_pipeline.pipelines.evaluation.nodes import _label_probs

    def store(name, labels):
        fields = {"x": ((3, 2, 2), "uint8"), "label": ((), "int64")}
        with FeatureStoreWriter(tmp_path / name, {"kind": "pixels"}, fields, 8) as w:
            w.add({"x": np.zeros((len(labels), 3, 2, 2), np.uint8), "label": np.array(labels)})
        return str(tmp_path / name)

    uniform = {"labels": "uniform"}
    assert _label_probs(store("three", [0, 1, 2, 2]), uniform, 10) == [1 / 3] * 3 + [0.0] * 7
    assert _label_probs(store("ten", list(range(10))), uniform, 10) is None
    assert _label_probs(None, uniform, 10) is None
