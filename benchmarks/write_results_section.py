"""Write one docs/RESULTS.md section from the store, as it stands now.

``./run.sh up --write-results FILE`` writes its section right after its own compression job and the
benchmark that follows it. A family that later gains variants (``POST /jobs/autotune`` publishes
``tuned-...``) and newer benchmark runs (``POST /jobs/benchmark``) needs its section written again
from the store: this script does that, with the same text as ``up`` (``slimbert.report.results.section``):
the family's variants with their accuracy at creation, the showdown the API serves
(``GET /reports/showdown``: the newest benchmark run and the newest autotune trail) and the recipe.
It measures nothing; it reads what the jobs stored. Its own command line is the section's command.

    .venv/bin/python benchmarks/write_results_section.py --family F --label quick --write-results docs/RESULTS.md
        [--batch-size 1] [--gate 0.99]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.services.reports import showdown  # noqa: E402
from slimbert.config import get_settings  # noqa: E402
from slimbert.report.results import section, write_section  # noqa: E402
from slimbert.store.bucket import open_variant_store  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True)
    parser.add_argument("--label", required=True, help="the section's name: its heading and its markers")
    parser.add_argument("--write-results", type=Path, required=True, metavar="FILE")
    parser.add_argument("--batch-size", type=int, default=1, help="the showdown's batch size (the API's default)")
    parser.add_argument("--gate", type=float, default=0.99,
                        help="accuracy gate, fraction of baseline (the API's default)")
    args = parser.parse_args()
    store = open_variant_store(get_settings())
    manifests = store.manifests(args.family)
    report = showdown(store, args.family, args.batch_size, args.gate)
    command = ".venv/bin/python benchmarks/write_results_section.py " + shlex.join(sys.argv[1:])
    write_section(args.write_results, args.label, section(args.label, command, manifests, report, None))
    print(f"wrote the {args.label} section of {args.write_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
