"""Check a feature store's content on demand: `python -m uvit_pipeline.data.verify <store> [--quick]`.

Without `--quick`: re-hash every shard file and the manifest (sha256) against what the writer
recorded (`FeatureStore.verify`, reads all data once). With `--quick`: the cheap check every
training start runs (`FeatureStore.check`: sizes, manifest, sampled blocks of every shard).
Exit status 0 when intact, 1 with the damaged file named when not.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .feature_store import FeatureStore
from .store_format import FeatureStoreCorrupt, FeatureStoreIncomplete


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uvit_pipeline.data.verify", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("store", nargs="+", help="feature store folder(s) (holding meta.json)")
    parser.add_argument(
        "--quick", action="store_true", help="the start-up check instead of full sha256"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    status = 0
    for root in args.store:
        t0 = time.perf_counter()
        try:
            store = FeatureStore(root)
            store.check() if args.quick else store.verify()
        except (FileNotFoundError, FeatureStoreCorrupt, FeatureStoreIncomplete) as err:
            sys.stderr.write(f"FAILED {root}: {err}\n")
            status = 1
            continue
        what = "checked (quick)" if args.quick else "verified (sha256 of every file)"
        took = time.perf_counter() - t0
        sys.stdout.write(f"OK {root}: {what} in {took:.1f} s, content_id {store.content_id}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
