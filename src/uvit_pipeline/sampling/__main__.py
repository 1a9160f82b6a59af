"""`accelerate launch` entry point of chunked sampling: `python -m uvit_pipeline.sampling --spec spec.json`."""

from __future__ import annotations

import argparse
import sys

from .._io import read_json
from .generate import generate_to_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uvit_pipeline.sampling", description=__doc__)
    parser.add_argument("--spec", required=True, help="sampling spec JSON (see generate_to_dir)")
    args = parser.parse_args(argv)
    spec = read_json(args.spec)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=spec.get("device", "cpu") == "cpu")
    spec["device"] = str(accelerator.device)
    generate_to_dir(
        spec,
        accelerator.process_index,
        accelerator.num_processes,
        progress=accelerator.is_main_process,
    )
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
