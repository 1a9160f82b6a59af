"""Documentation that is generated from the code stays current."""

from __future__ import annotations

import re
import subprocess

import pytest

from uvit_pipeline.dag import DOC, DOC_ENVIRONMENTS, doc_block, environment_dag

ROOT = DOC.parents[1]


@pytest.mark.parametrize("env", DOC_ENVIRONMENTS)
def test_architecture_diagrams_match_the_pipelines(env):
    expected = doc_block(env, environment_dag(ROOT, env))
    assert expected in DOC.read_text(), (
        f"docs/architecture.md: the DAG of {env} is stale; run `python -m uvit_pipeline.dag`"
    )


def test_repository_cites_only_its_own_documents():
    # the names of documents outside the repository, spelled so that this file does not match
    outside = "|".join(("shared" + "/docs", "uvit" + "-reference", "kedro" + "-conventions"))
    out = subprocess.run(
        ["git", "grep", "-n", "-E", outside],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert out.stdout == "", out.stdout


def test_parameter_reference_matches_the_schema():
    from uvit_pipeline.pipelines.params import REFERENCE, render_reference

    expected = render_reference(ROOT / "conf" / "base")
    assert (ROOT / REFERENCE).read_text() == expected, (
        "docs/parameters.md is stale; run `python -m uvit_pipeline.pipelines.params`"
    )
    for key in ("`training.n_steps`", "`model.embed_dim`", "`generate.classes`", "`data_root`"):
        assert key in expected


def test_troubleshooting_names_every_known_error_and_the_verbose_switch():
    import uvit_pipeline.data.coco  # noqa: F401  (modules defining known errors)
    import uvit_pipeline.data.sources  # noqa: F401
    import uvit_pipeline.data.text_features  # noqa: F401
    import uvit_pipeline.datasets.directory  # noqa: F401
    import uvit_pipeline.datasets.guard  # noqa: F401
    import uvit_pipeline.launch  # noqa: F401
    import uvit_pipeline.training.checkpoint  # noqa: F401
    from uvit_pipeline.errors import UserFacingError

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    missing = {c.__name__ for c in subclasses(UserFacingError)} - set(re.findall(r"`(\w+)`", text))
    assert not missing, f"docs/troubleshooting.md does not name {sorted(missing)}"
    assert "--verbose" in text and "UVIT_VERBOSE=1" in text and "info.log" in text
