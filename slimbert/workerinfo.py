"""What a worker process can do: devices, CPU flags and library versions."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any


def worker_capabilities() -> dict[str, Any]:
    """Capabilities a worker reports when it starts (served to ``GET /workers``)."""
    from slimbert.benchmark.environment import describe_environment

    env = describe_environment()
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "platform": platform.platform(), **env}
