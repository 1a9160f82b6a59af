"""A child module for the cluster tests: the process with global rank $FAIL_RANK exits with 3."""

import os
import sys

if __name__ == "__main__":
    rank = os.environ.get("RANK")
    if rank == os.environ.get("FAIL_RANK", "1"):
        sys.stderr.write(f"rank {rank}: failing on purpose\n")
        sys.exit(3)
