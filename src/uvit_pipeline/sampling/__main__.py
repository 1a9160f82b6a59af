"""`accelerate launch` entry point of chunked sampling:
`python -m uvit_pipeline.sampling --spec spec.json --out DIR`."""

from __future__ import annotations

import argparse
import sys

from accelerate import Accelerator

from .generate import generate_to_dir
from .spec import SamplingSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uvit_pipeline.sampling", description=__doc__)
    parser.add_argument("--spec", required=True, help="SamplingSpec JSON (SamplingSpec.to_json)")
    parser.add_argument("--out", required=True, help="folder the sample chunks are written into")
    args = parser.parse_args(argv)
    spec = SamplingSpec.from_json(args.spec)
    accelerator = Accelerator(cpu=spec.device == "cpu")
    generate_to_dir(
        spec.replace(device=str(accelerator.device)),
        args.out,
        accelerator.process_index,
        accelerator.num_processes,
        progress=accelerator.is_main_process,
    )
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
