"""Documentation that is generated from the code stays current."""

from __future__ import annotations

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
