"""Demo classifier: trains to high accuracy on coloured squares; features, demo FD, safetensors round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvit_pipeline.metrics import demo_classifier as dc

# ten well separated colours, one per class
PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [250, 250, 250], [128, 128, 0],
    ],
    dtype=np.float64,
)  # fmt: skip


def coloured_squares(n_per_class: int, size: int = 16, seed: int = 0):
    """uint8 (N, 3, size, size) images: a square of the class colour at a random place, on noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, colour in enumerate(PALETTE):
        for _ in range(n_per_class):
            img = rng.normal(40, 15, size=(size, size, 3))
            side = rng.integers(size // 3, size // 2 + 1)
            top, left = rng.integers(0, size - side + 1, size=2)
            img[top : top + side, left : left + side] = colour + rng.normal(0, 10, 3)
            images.append(np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.array(labels)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convs run ~10x slower with 2 threads on a shared, busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained(one_thread):
    images, labels = coloured_squares(n_per_class=30, seed=0)
    model, train_acc = dc.train_demo_classifier(
        images, labels, steps=150, batch_size=32, lr=3e-3, width=16, feature_dim=32, seed=0
    )
    return model, train_acc, images, labels


def test_training_reaches_high_accuracy(trained):
    model, train_acc, _, _ = trained
    assert train_acc > 0.95
    held_out, held_labels = coloured_squares(n_per_class=10, seed=1)
    assert dc.classifier_accuracy(model, held_out, held_labels) > 0.95
    assert not model.training and all(not p.requires_grad for p in model.parameters())


def test_features_and_demo_fd(trained):
    model, _, images, _ = trained
    feats = dc.classifier_features(model, images, batch_size=50)
    assert feats.shape == (len(images), 32) and feats.dtype == np.float64
    assert dc.demo_fd(model, images, images) == pytest.approx(0.0, abs=1e-6)
    same_distribution, _ = coloured_squares(n_per_class=30, seed=2)
    noise = np.random.default_rng(3).integers(0, 256, size=images.shape, dtype=np.uint8)
    near = dc.demo_fd(model, images, same_distribution)
    far = dc.demo_fd(model, images, noise)
    assert far > 10 * near and far > 1.0


def test_training_is_deterministic_and_leaves_global_rng_alone():
    images, labels = coloured_squares(n_per_class=3, size=8, seed=4)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = dc.train_demo_classifier(images, labels, steps=3, batch_size=8, width=8, feature_dim=8)
    after = torch.rand(1)
    b, _ = dc.train_demo_classifier(images, labels, steps=3, batch_size=8, width=8, feature_dim=8)
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_save_load_round_trip(trained, tmp_path):
    model, _, images, _ = trained
    path = tmp_path / "cls" / "demo_classifier.safetensors"
    dc.save_classifier(path, model)
    assert [p.name for p in path.parent.iterdir()] == ["demo_classifier.safetensors"]
    loaded = dc.load_classifier(path)
    assert loaded.config == model.config
    np.testing.assert_array_equal(
        dc.classifier_features(loaded, images[:8]), dc.classifier_features(model, images[:8])
    )
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="garbage.safetensors"):
        dc.load_classifier(garbage)
    with pytest.raises(FileNotFoundError, match="absent"):
        dc.load_classifier(tmp_path / "absent.safetensors")


def test_input_validation():
    model = dc.DemoClassifier(num_classes=3, width=8, feature_dim=4)
    with pytest.raises(ValueError, match="images"):
        dc.classifier_features(model, np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="labels"):
        dc.classifier_accuracy(model, np.zeros((2, 3, 8, 8), np.uint8), np.array([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        dc.train_demo_classifier(np.zeros((2, 3, 8, 8), np.uint8), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="width"):
        dc.DemoClassifier(num_classes=3, width=12)
