#!/usr/bin/env bash
# ./run.sh up [--exit-when-done] : the stack, the default compression job, the showdown, a prediction
# ./run.sh test                  : the test suite (real Redis, real Celery workers)
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
cmd=${1:-up}
shift || true
case "$cmd" in
  up)   exec .venv/bin/python scripts/up.py "$@" ;;
  test) .venv/bin/python scripts/ensure_redis.py
        exec .venv/bin/python -m pytest "$@" ;;
  *)    echo "usage: ./run.sh up [--exit-when-done] | ./run.sh test [pytest args]" >&2; exit 2 ;;
esac
