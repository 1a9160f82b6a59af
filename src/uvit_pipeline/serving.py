"""A trained generator as an MLflow model: `mlflow models serve` answers prompts or classes with PNGs.

The model is an `mlflow.pyfunc` `PythonModel` whose one artifact, `generator`, is the bundle
`UViTGenerator.save_pretrained` writes (the checkpoint, and the autoencoder and text encoder where the
model needs them). Its input is a DataFrame with one row per image: `prompt` (text models) or `class`
(class models: an index or a name), and optionally `steps`, `guidance` and `seed`; its output has
`condition`, `seed` and `image` (a base64-encoded PNG) per row.

    mlflow models serve -m runs:/<run id>/generator --env-manager local --port 5001
    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
        -d '{"dataframe_split": {"columns": ["prompt"], "data": [["a red circle"]]}}'

`log_generator` logs one into the active run; the catalog entry `generator_model`
(`GeneratorModelDataset`) does it in the `serving` pipeline (part of the demos' default DAG; a paper
experiment: `kedro run --env <name> --pipelines serving`).
"""

from __future__ import annotations

import base64
import io
import math
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

ARTIFACT = "generator"
INPUT_COLUMNS = ("prompt", "class", "steps", "guidance", "seed")
OUTPUT_COLUMNS = ("condition", "seed", "image")
# What the model needs at serving time (pinned to this environment's versions).
REQUIREMENTS = ("torch", "numpy", "pandas", "pillow", "safetensors", "diffusers", "transformers")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """`predict(DataFrame)` -> DataFrame of base64 PNGs, one per input row."""

    def load_context(self, context) -> None:
        from uvit_pipeline.sampling.pipeline import UViTGenerator

        self.generator = UViTGenerator.from_pretrained(context.artifacts[ARTIFACT], device="auto")

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        unknown = sorted(set(frame.columns) - set(INPUT_COLUMNS))
        if unknown:
            raise ValueError(f"unknown input columns {unknown}; known: {list(INPUT_COLUMNS)}")
        gen, out = self.generator, []
        column = {"text": "prompt", "class": "class"}.get(gen.kind)
        for i, row in enumerate(frame.to_dict("records")):
            condition = row.get(column) if column else None
            if column and _blank(condition):
                raise ValueError(f"row {i}: this model needs a `{column}` value")
            if gen.kind == "class" and isinstance(condition, float):
                condition = int(condition)
            options = {k: row[k] for k in ("steps", "guidance", "seed") if not _blank(row.get(k))}
            seed = int(options.pop("seed", 0))
            steps = int(options["steps"]) if "steps" in options else None
            guidance = float(options["guidance"]) if "guidance" in options else None
            image = gen(
                None if condition is None else [condition],
                steps=steps,
                guidance=guidance,
                seed=seed,
            )[0]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            text = base64.b64encode(buffer.getvalue()).decode("ascii")
            out.append({"condition": str(condition or ""), "seed": seed, "image": text})
        return pd.DataFrame(out, columns=list(OUTPUT_COLUMNS))


def decode_image(text: str):
    """A PIL image from one `image` value of the model's output."""
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema(
        [
            ColSpec("string", "prompt", required=False),
            ColSpec("string", "class", required=False),
            ColSpec("long", "steps", required=False),
            ColSpec("double", "guidance", required=False),
            ColSpec("long", "seed", required=False),
        ]
    )
    outputs = Schema(
        [ColSpec("string", "condition"), ColSpec("long", "seed"), ColSpec("string", "image")]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def log_generator(
    generator, name: str = ARTIFACT, *, example: dict | None = None
) -> mlflow.models.model.ModelInfo:
    """Log a `UViTGenerator` into the active MLflow run as the pyfunc model `name` (its bundle and
    this package's code travel with it); returns the `ModelInfo` (`model_uri`: runs:/<id>/<name>)."""
    import uvit_pipeline

    with tempfile.TemporaryDirectory(prefix="uvit-generator-") as tmp:
        bundle = generator.save_pretrained(Path(tmp) / "bundle")
        code = Path(tmp) / "uvit_pipeline"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(Path(uvit_pipeline.__file__).parent, code, ignore=ignore)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=GeneratorModel(),
            artifacts={ARTIFACT: str(bundle)},
            code_paths=[str(code)],
            signature=_signature(),
            input_example=pd.DataFrame([example]) if example else None,
            pip_requirements=_requirements(),
        )


class GeneratorModelDataset(AbstractDataset[dict, Any]):
    """Logs the trained generator as the MLflow model `name` of the active run on save.

    save(spec): `spec` holds `checkpoint` and the other arguments of `UViTGenerator.from_pretrained`
    (autoencoder, text_encoder, class_names, defaults); without an active run nothing is logged.
    load(): the model this session logged, as an `mlflow.pyfunc` model. It exists (for
    `kedro run --only-missing-outputs`) once the MLflow experiment `experiment` holds a model of
    this name; a new checkpoint upstream logs a new one all the same.
    """

    def __init__(
        self, *, name: str = ARTIFACT, experiment: str | None = None, metadata: dict | None = None
    ) -> None:
        self._name = name
        self._experiment = experiment
        self._uri: str | None = None
        self.metadata = metadata

    def _exists(self) -> bool:
        if self._experiment is None:
            return False
        experiment = mlflow.get_experiment_by_name(self._experiment)
        if experiment is None:
            return False
        found = mlflow.search_logged_models(
            experiment_ids=[experiment.experiment_id],
            filter_string=f"name = '{self._name}'",
            max_results=1,
            output_format="list",
        )
        return bool(found)

    def load(self):
        if self._uri is None:
            raise DatasetError("no generator model was logged in this session")
        return mlflow.pyfunc.load_model(self._uri)

    def save(self, data: dict) -> None:
        import logging

        from uvit_pipeline.sampling.pipeline import UViTGenerator

        log = logging.getLogger(__name__)
        if mlflow.active_run() is None:
            log.info("No active MLflow run: the generator is not logged as an MLflow model")
            return
        spec = dict(data)
        generator = UViTGenerator.from_pretrained(spec.pop("checkpoint"), device="cpu", **spec)
        info = log_generator(generator, self._name)
        self._uri = f"runs:/{mlflow.active_run().info.run_id}/{self._name}"
        log.info("Logged the generator as MLflow model %s (%s)", self._uri, info.model_uri)

    def _describe(self) -> dict[str, Any]:
        return {"name": self._name, "experiment": self._experiment}
