"""What a checkpoint accepts as conditions, checked against what a run asks for before sampling.

A class-conditional model has no use for prompts and a text model none for classes: rather than
ignoring them (and generating something else than asked), `check_requested_conditions` refuses the
request and says what the checkpoint accepts.
"""

from __future__ import annotations

from uvit_pipeline.errors import RequestError

from ..models.checkpoint import CheckpointInfo


def accepted_conditions(info: CheckpointInfo) -> str:
    """'text' | 'class' | 'none': what the checkpoint's network is conditioned on."""
    if info.is_text:
        return "text"
    return "class" if info.num_real_classes else "none"


def check_requested_conditions(info: CheckpointInfo, prompts: list[str], classes: list) -> None:
    """Raise ValueError when `prompts` go to a model that is not a text model or `classes` to one
    that is not class-conditional, naming the checkpoint and what it accepts."""
    kind, checkpoint = accepted_conditions(info), info.path
    if kind == "text":
        accepts = "prompts (generate.prompts, or --params prompt_file=<file, one prompt a line>)"
    elif kind == "class":
        accepts = (
            f"classes (generate.classes: indices in [0, {info.num_real_classes}) or class names; "
            "empty = the first 10)"
        )
    else:
        accepts = "no condition (it is unconditional): leave generate.prompts and classes empty"
    if prompts and kind != "text":
        raise RequestError(
            f"{len(prompts)} prompt(s) given (generate.prompts or prompt_file), but the checkpoint "
            f"{checkpoint} is a {'class-conditional' if kind == 'class' else 'unconditional'} "
            f"model that would ignore them. It accepts {accepts}"
        )
    if classes and kind != "class":
        raise RequestError(
            f"generate.classes {list(classes)} given, but the checkpoint {checkpoint} is a "
            f"{'text-to-image' if kind == 'text' else 'unconditional'} model that would ignore "
            f"them. It accepts {accepts}"
        )
