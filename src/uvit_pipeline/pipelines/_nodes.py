"""How pipelines are declared: a node's inputs are its function's parameter names.

A parameter named after a parameter section (`features`, `training`, ... the keys of
`params.SCHEMA`) is that section (`params:features`); any other name is the catalog entry of that
name. Node functions therefore read like their place in the DAG, and a pipeline is a list of
(function, outputs) pairs.
"""

from __future__ import annotations

import inspect

from kedro.pipeline import Node, Pipeline

from .params import SCHEMA


def node(func, outputs: str | list[str], *, name: str | None = None, tags=()) -> Node:
    """A Kedro node running `func`, its inputs taken from the function's signature."""
    names = list(inspect.signature(func).parameters)
    inputs = [f"params:{n}" if n in SCHEMA else n for n in names]
    return Node(func=func, inputs=inputs, outputs=outputs, name=name or func.__name__, tags=tags)


def stage(name: str, *nodes: Node) -> Pipeline:
    """The pipeline `name`: its nodes, tagged with the stage name (kedro-viz filters by tag)."""
    return Pipeline(list(nodes), tags=[name])
