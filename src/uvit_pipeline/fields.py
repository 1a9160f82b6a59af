"""Settings declared once: a dataclass field that carries its check and its help text.

`setting(default, check, help)` declares one field of a typed config (`TrainConfig`, `UViTConfig`).
The parameter schema (`pipelines/params.py`), the configs' `validate()` and docs/parameters.md all
read the check and the help from the field, so a new hyperparameter is one declaration, its value in
conf/base and its use. A `Check` raises `ValueError` naming the dotted parameter. Plain Python: this
module imports nothing heavy (every `kedro` command loads the parameter schema).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# Field metadata keys.
CHECK, HELP, PARAMETER, IDENTITY = "check", "help", "parameter", "identity"


class Check:
    """A test of one value, and the words for what passes (`what`: error messages and the docs)."""

    def __init__(self, what: str | Callable[[], str], ok: Callable[[Any], bool]):
        self._what, self.ok = what, ok

    @property
    def what(self) -> str:
        return self._what() if callable(self._what) else self._what

    def __call__(self, name: str, value: Any) -> None:
        if not self.ok(value):
            raise ValueError(f"{name} must be {self.what}, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def integer(low: int | None = None) -> Check:
    """An int >= low ("a positive integer" for low=1)."""
    words = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}
    what = words.get(low, f"an integer >= {low}")
    return Check(what, lambda v: _is_int(v) and (low is None or v >= low))


def number(low=None, high=None, *, low_open: bool = False, high_open: bool = True) -> Check:
    """A real number in the interval given ("a number > 0" for low=0, low_open)."""
    if high is not None:
        what = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is None:
        what = "a number"
    elif low == 0 and low_open:
        what = "a number > 0"
    else:
        what = f"a number {'>' if low_open else '>='} {low}"

    def ok(v) -> bool:
        if not _is_real(v):
            return False
        above = low is None or (v > low if low_open else v >= low)
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    return Check(what, ok)


boolean = Check("true or false", lambda v: isinstance(v, bool))
text = Check("a non-empty string", lambda v: isinstance(v, str) and bool(v))
mapping = Check("a mapping", lambda v: isinstance(v, dict))


def one_of(options: tuple | Callable[[], Any]) -> Check:
    """A choice from a tuple or a registry (a callable, so a heavy registry loads when checked)."""

    def known() -> list:
        return list(options() if callable(options) else options)

    return Check(lambda: f"one of {known()}", lambda v: v in known())


def optional(check: Check) -> Check:
    """`check`, or null."""

    class Optional(Check):
        def __call__(self, name, value):
            if value is not None:
                check(name, value)

    return Optional(lambda: f"{check.what}, or null", lambda v: v is None or check.ok(v))


def list_of(check: Check) -> Check:
    """A list whose items pass `check` (an error names the item, `name[i]`)."""

    class ListOf(Check):
        def __call__(self, name, value):
            if not isinstance(value, list | tuple):
                raise ValueError(f"{name} must be {self.what}, got {value!r}")
            for i, item in enumerate(value):
                check(f"{name}[{i}]", item)

    def ok(v) -> bool:
        return isinstance(v, list | tuple) and all(check.ok(x) for x in v)

    return ListOf(lambda: f"a list, each item {check.what}", ok)


def pair(check: Check, words: str) -> Check:
    """Two values that pass `check`, as a list or tuple."""
    return Check(
        words, lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(map(check.ok, v))
    )


# --- declaring fields ------------------------------------------------------------------------------


def setting(default: Any, check: Check, help: str, *, identity: bool = True) -> Any:
    """A parameter field: the user sets it (`training.<name>` / `model.<name>`). `identity=False`:
    changing it does not change what is trained (a rerun resumes the same run)."""
    meta = {CHECK: check, HELP: help, PARAMETER: True, IDENTITY: identity}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def derived(default: Any, check: Check | None, help: str, *, identity: bool = True) -> Any:
    """A field the pipeline fills in (paths, store identities), checked like a setting but not a
    parameter a user writes."""
    meta = {CHECK: check, HELP: help, PARAMETER: False, IDENTITY: identity}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_fields(obj: Any, prefix: str) -> None:
    """Run every declared field's check on `obj`, naming each as `{prefix}{field}`."""
    for f in dataclasses.fields(obj):
        check = f.metadata.get(CHECK)
        if check is not None:
            check(f"{prefix}{f.name}", getattr(obj, f.name))


def parameters(cls) -> dict[str, dataclasses.Field]:
    """The fields of `cls` a user sets, in declaration order."""
    return {f.name: f for f in dataclasses.fields(cls) if f.metadata.get(PARAMETER)}


def not_identity(cls) -> tuple[str, ...]:
    """Fields declared with `identity=False`."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(IDENTITY) is False)
