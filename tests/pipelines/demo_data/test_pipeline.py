"""`demo_data`: the synthetic set in the layout the demo reads, built once per setting."""

from pathlib import Path

from uvit_pipeline.data.demo import CLASS_NAMES
from uvit_pipeline.pipelines.demo_data import create_pipeline

from ..conftest import run


def test_generates_the_requested_layout_into_staging(demo_params):
    out = run(create_pipeline(), {}, demo_params)
    root = Path(out["raw_images"])
    assert root.name == "imagenet" and root.parent.parent == Path(demo_params["paths"]["staging"])
    assert sorted(p.name for p in (root / "train").iterdir()) == CLASS_NAMES
    assert out["demo_data_summary"]["n_train"] == 4 * len(CLASS_NAMES)
    # same settings: the set is reused, not regenerated
    again = run(create_pipeline(), {}, demo_params)
    assert again["raw_images"] == out["raw_images"] and again["demo_data_summary"]["skipped"]


def test_coco_layout(demo_params):
    params = {**demo_params, "demo_data": {**demo_params["demo_data"], "layout": "coco"}}
    root = Path(run(create_pipeline(), {}, params)["raw_images"])
    assert (root / "annotations" / "captions_train2014.json").is_file()
    assert any((root / "train2014").iterdir())
