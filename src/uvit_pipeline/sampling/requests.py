"""What a checkpoint accepts as conditions, checked against what a run asks for before sampling.

A class-conditional model has no use for prompts and a text model none for classes: rather than
ignoring them (and generating something else than asked), `check_requested_conditions` refuses the
request and says what the checkpoint accepts.
"""

from __future__ import annotations

from typing import Any


def accepted_conditions(config: dict[str, Any]) -> str:
    """'text' | 'class' | 'none', from a checkpoint's config.json (its `model_kwargs`)."""
    kwargs = config.get("model_kwargs") or {}
    if kwargs.get("clip_dim") is not None:
        return "text"
    return "class" if int(kwargs.get("num_classes") or -1) > 0 else "none"


def _real_classes(config: dict[str, Any]) -> int:
    n = int((config.get("model_kwargs") or {}).get("num_classes") or 0)
    return (
        n - 1 if float(config.get("p_uncond", 0.0)) > 0 else n
    )  # the last index is the null class


def check_requested_conditions(
    config: dict[str, Any], prompts: list[str], classes: list, checkpoint: str
) -> None:
    """Raise ValueError when `prompts` go to a model that is not a text model or `classes` to one
    that is not class-conditional, naming the checkpoint and what it accepts."""
    kind = accepted_conditions(config)
    if kind == "text":
        accepts = "prompts (generate.prompts, or --params prompt_file=<file, one prompt a line>)"
    elif kind == "class":
        accepts = (
            f"classes (generate.classes: indices in [0, {_real_classes(config)}) or class names; "
            "empty = the first 10)"
        )
    else:
        accepts = "no condition (it is unconditional): leave generate.prompts and classes empty"
    if prompts and kind != "text":
        raise ValueError(
            f"{len(prompts)} prompt(s) given (generate.prompts or prompt_file), but the checkpoint "
            f"{checkpoint} is a {'class-conditional' if kind == 'class' else 'unconditional'} "
            f"model that would ignore them. It accepts {accepts}"
        )
    if classes and kind != "class":
        raise ValueError(
            f"generate.classes {list(classes)} given, but the checkpoint {checkpoint} is a "
            f"{'text-to-image' if kind == 'text' else 'unconditional'} model that would ignore "
            f"them. It accepts {accepts}"
        )
