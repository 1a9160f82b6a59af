"""The DAG as a Mermaid diagram, generated from the registered pipelines (docs/architecture.md holds
the output; `tests/test_docs.py` keeps it current). `python -m uvit_pipeline.dag [env]` prints it."""

from __future__ import annotations

import sys

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


def main(argv: list[str]) -> int:
    from pathlib import Path

    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(Path.cwd())
    with KedroSession.create(env=argv[0] if argv else None) as session:
        session.load_context()  # selects the environment's `__default__`
        print(mermaid(pipelines["__default__"]))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
