"""The project's known errors: bad or missing input, a missing checkpoint, an unknown class or prompt
file, a failed training child, a held lock, a damaged version. Each message says what is wrong and what
to do, so `kedro run` prints it as one `Error: …` line; the traceback goes to the log file (info.log),
and to the terminal with `kedro run --verbose` or `UVIT_VERBOSE=1` (docs/troubleshooting.md).

`UserFacingError` is a marker mixed into the project's error classes next to the builtin they were
(`class LockedError(UserFacingError, RuntimeError)`), so callers that catch `RuntimeError` still do.
No Kedro or MLflow here: the library packages raise these."""

from __future__ import annotations

import os


class UserFacingError(Exception):
    """A known error whose message alone tells the user what to do."""


class MissingInput(UserFacingError, FileNotFoundError):
    """Raw data (or another input a user provides) is not where the configuration says."""


class RequestError(UserFacingError, ValueError):
    """A `generate`/`evaluation` request the checkpoint cannot serve: an unknown class, prompts for a
    class-conditional model, an unreadable prompt file."""


class ChildFailed(UserFacingError, RuntimeError):
    """A launched training or sampling process exited with an error."""


def verbose() -> bool:
    """True when the user asked for full tracebacks (`UVIT_VERBOSE=1`, set by `kedro run --verbose`)."""
    return os.environ.get("UVIT_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")


def known_error(err: BaseException | None) -> UserFacingError | None:
    """The first `UserFacingError` in `err`'s chain of causes (`raise … from …`), if any: Kedro wraps
    a dataset's error in its own `DatasetError`. An error raised while handling a known one (its
    implicit context) is not the known one: it keeps its traceback."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserFacingError):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None
