"""Known third-party warnings that say nothing about a run of this project, filtered precisely (any
other warning still shows). Installed by `kedro` itself before it loads plugins (the `kedro.init`
entry point in pyproject.toml) and again by settings.py for sessions created from Python."""

import logging
import re
import warnings

KNOWN = (
    # OmegaConf deprecates the API Kedro's config loader calls; nothing for users to change.
    r"register_new_resolver\(\) is deprecated",
    # MLflow's hint about kedro-mlflow's own model class, which this project does not use.
    r"Add type hints to the `predict` method",
)
_PATTERN = re.compile("|".join(KNOWN))


class _KnownWarnings(logging.Filter):
    """Drops the known warnings where Kedro routes warnings to logging (logger `py.warnings`);
    MLflow raises its hint under its own `simplefilter("once")`, which a warnings filter cannot stop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _PATTERN.search(record.getMessage())


def install() -> None:
    for message in KNOWN:
        warnings.filterwarnings("ignore", f".*{message}", UserWarning)
    logger = logging.getLogger("py.warnings")
    if not any(isinstance(f, _KnownWarnings) for f in logger.filters):
        logger.addFilter(_KnownWarnings())
