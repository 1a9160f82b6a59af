"""Parameter validation at the Kedro boundary: every check names the dotted parameter it rejects.

`hooks.ValidateParameters` runs these for every parameter section when the catalog is built, so a bad
value fails the run before any compute; nodes call them again when run on their own.
"""

from __future__ import annotations

from typing import Any

SOURCES = ("imagenet_folder", "cifar10", "celeba", "coco")
FEATURE_KINDS = ("pixels", "latent_moments")
CROPS = ("adm", "none", "celeba", "coco")
FID_NETWORKS = ("inception_v3_fid", "demo_classifier")
SAMPLERS = ("euler_maruyama", "dpm_solver", "dpm_solver_pp")


def _positive_int(section: str, params: dict, key: str, allow_none: bool = False) -> None:
    value = params.get(key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{section}.{key} must be a positive integer, got {value!r}")


def _positive_float(section: str, params: dict, key: str) -> None:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{section}.{key} must be a positive number, got {value!r}")


def _choice(section: str, params: dict, key: str, choices: tuple[str, ...]) -> None:
    value = params.get(key)
    if value not in choices:
        raise ValueError(f"{section}.{key} must be one of {list(choices)}, got {value!r}")


def validate_data(p: dict[str, Any]) -> None:
    _choice("data", p, "source", SOURCES)
    _positive_int("data", p, "workers")


def validate_features(p: dict[str, Any]) -> None:
    _choice("features", p, "kind", FEATURE_KINDS)
    _choice("features", p, "crop", CROPS)
    for key in ("resolution", "shard_size", "batch_size"):
        _positive_int("features", p, key)
    if p["kind"] == "latent_moments":
        if not p.get("autoencoder"):
            raise ValueError(
                "features.autoencoder must name the autoencoder (a Hugging Face id or a "
                "local diffusers directory) when features.kind is latent_moments"
            )
        if p["resolution"] % 8:
            raise ValueError(
                f"features.resolution must be a multiple of 8 for the KL-f8 autoencoder, "
                f"got {p['resolution']}"
            )
        _positive_float("features", p, "scale_factor")


def validate_fid(p: dict[str, Any]) -> None:
    _choice("fid", p, "network", FID_NETWORKS)
    _positive_int("fid", p, "batch_size")
    _positive_int("fid", p, "max_reference_images", allow_none=True)
    if p["network"] == "demo_classifier":
        c = p.get("classifier") or {}
        for key in ("steps", "batch_size"):
            _positive_int("fid.classifier", c, key)
        _positive_float("fid.classifier", c, "lr")


def validate_evaluation(p: dict[str, Any]) -> None:
    _choice("evaluation", p, "sampler", SAMPLERS)
    for key in (
        "steps",
        "n_samples",
        "batch_size",
        "grid_columns",
        "num_processes",
        "decode_batch_size",
    ):
        _positive_int("evaluation", p, key)
    if p.get("labels", "uniform") not in ("uniform", "train_frequencies"):
        raise ValueError(
            f"evaluation.labels must be one of ['uniform', 'train_frequencies'], got {p.get('labels')!r}"
        )
    scale = p.get("cfg_scale", 0.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
        raise ValueError(f"evaluation.cfg_scale must be a number >= 0, got {scale!r}")


def validate_model_and_training(
    model: dict[str, Any],
    training: dict[str, Any],
    launcher: dict[str, Any] | None,
    features: dict[str, Any],
) -> None:
    from uvit_pipeline.pipelines.training.nodes import make_train_config  # lazily: torch is heavy

    make_train_config(
        model,
        training,
        launcher or {},
        features,
        store_path="<not yet built>",
        run_root="<validation>",
    )


VALIDATORS = {
    "data": validate_data,
    "features": validate_features,
    "fid": validate_fid,
    "evaluation": validate_evaluation,
}


ALL_SECTIONS = frozenset({"data", "features", "model", "training", "launcher", "fid", "evaluation"})


def validate_sections(params: dict[str, Any], sections: set[str]) -> None:
    """Validate the named top-level parameter sections (those a pipeline consumes)."""
    for name in sorted(sections & VALIDATORS.keys()):
        VALIDATORS[name](params.get(name) or {})
    if "training" in sections or "model" in sections:
        validate_features(params.get("features") or {})
        validate_model_and_training(
            params.get("model") or {},
            params.get("training") or {},
            params.get("launcher"),
            params.get("features") or {},
        )
