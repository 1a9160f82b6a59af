"""An entry of `run_parallel` for the harness tests: one JSON file per block, naming who made it."""

import json
from pathlib import Path


def write_blocks(payload: dict, part) -> None:
    out = Path(payload["out"])
    for k in part.blocks(payload["n"]):
        record = {"block": k, "rank": part.rank, "world": part.world}
        (out / f"block-{k}.json").write_text(json.dumps(record))
