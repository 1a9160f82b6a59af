"""The DAG as a Mermaid diagram, generated from the registered pipelines (docs/architecture.md holds
the output; `tests/test_docs.py` keeps it current). `python -m uvit_pipeline.dag [env]` prints it."""

from __future__ import annotations

import sys
from pathlib import Path

from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.pipeline import Pipeline


def mermaid(pipeline: Pipeline) -> str:
    """`flowchart LR`: tasks as boxes, datasets as rounded nodes; parameters are left out."""
    lines = ["flowchart LR"]
    datasets: set[str] = set()
    for node in pipeline.nodes:  # topological order
        lines.append(f"  {node.name}[{node.name}]")
        for name in node.inputs:
            if not name.startswith("params:"):
                datasets.add(name)
                lines.append(f"  {name} --> {node.name}")
        for name in node.outputs:
            datasets.add(name)
            lines.append(f"  {node.name} --> {name}")
    lines += [f"  {name}([{name}])" for name in sorted(datasets)]
    return "\n".join(lines)


def environment_dag(project_path, env: str | None) -> str:
    """The Mermaid diagram of an environment's `__default__` (what `kedro run --env <env>` runs),
    without the inputs the environment does not have (`pipeline_registry` takes them out)."""
    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, env=env) as session:
        session.load_context()  # the project hook fits the registry to the environment
        return mermaid(pipelines["__default__"])


DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
DOC_ENVIRONMENTS = ("demo", "imagenet256_uvit_huge", "mscoco_uvit_small")


def doc_block(env: str, diagram: str) -> str:
    return f"<!-- dag:{env} -->\n```mermaid\n{diagram}\n```\n<!-- /dag:{env} -->"


def main(argv: list[str]) -> int:
    """Rewrite the diagrams of docs/architecture.md from the code (between `<!-- dag:<env> -->`)."""
    text = DOC.read_text()
    for env in argv or DOC_ENVIRONMENTS:
        start, end = f"<!-- dag:{env} -->", f"<!-- /dag:{env} -->"
        if start not in text:
            raise SystemExit(f"{DOC} has no {start} block")
        a, b = text.index(start), text.index(end) + len(end)
        text = text[:a] + doc_block(env, environment_dag(DOC.parents[1], env)) + text[b:]
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
