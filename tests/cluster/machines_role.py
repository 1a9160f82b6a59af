"""One machine of a run over plain machines, for the tests: machine 0 coordinates one launch of
`module` (default `tests.cluster.fail_on_rank`), machines 1.. serve it.

    python -m tests.cluster.machines_role RANK PORT SHARED_DIR TIMEOUT_S [MODULE]
"""

import sys
from pathlib import Path

from uvit_pipeline import machines
from uvit_pipeline.errors import ChildFailed
from uvit_pipeline.launch import LaunchSpec, run_under_accelerate


def spec(rank: int, port: int, timeout: float = 60, **kw) -> LaunchSpec:
    """Two machines on loopback, one CPU process each (unless `num_processes` says otherwise)."""
    return LaunchSpec(
        num_processes=kw.pop("num_processes", 2),
        num_machines=2,
        machine_rank=rank,
        main_process_ip="127.0.0.1",
        main_process_port=port,
        cpu=True,
        rendezvous_timeout_s=timeout,
        **kw,
    ).validate()


def main(argv: list[str]) -> int:
    rank, port, shared, timeout = int(argv[0]), int(argv[1]), Path(argv[2]), float(argv[3])
    module = argv[4] if len(argv) > 4 else "tests.cluster.fail_on_rank"
    spec_ = spec(rank, port, timeout)
    if rank > 0:
        return machines.main_for_worker(spec_)
    try:
        with machines.Coordinator(spec_, shared):
            run_under_accelerate(spec_, shared / "work", module, [], what="test child")
    except (ChildFailed, machines.MachinesError) as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
    sys.stdout.write("machine 0: done\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
