"""Print the showdown of a family in the terminal, straight from the store (no API needed).

    .venv/bin/python scripts/showdown.py [--family F] [--format markdown|csv|json] [--batch-size 1] [--gate 0.99]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slimbert.config import get_settings  # noqa: E402
from slimbert.report.render import to_csv, to_markdown  # noqa: E402
from slimbert.report.showdown import autotune_summary, build_showdown, latest_benchmark_run  # noqa: E402
from slimbert.store.bucket import open_variant_store  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default=None, help="default: the newest family")
    parser.add_argument("--format", choices=["markdown", "csv", "json"], default="markdown")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--gate", type=float, default=0.99, help="accuracy gate, fraction of baseline")
    args = parser.parse_args()
    store = open_variant_store(get_settings())
    family = args.family or store.newest_family()
    report = build_showdown(family, store.manifests(family), latest_benchmark_run(store, family),
                            batch_size=args.batch_size, gate=args.gate)
    report.autotune = autotune_summary(store.latest_report(family, kind="autotune"))
    if args.format == "json":
        print(json.dumps(report.model_dump(mode="json"), indent=1))
    else:
        print(to_csv(report) if args.format == "csv" else to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
