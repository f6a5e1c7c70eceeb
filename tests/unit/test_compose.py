"""No Docker engine runs here, so check what can be checked: the compose file and Dockerfiles agree
with the code and the settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from slimbert.config import Settings
from slimbert.tasks import QUEUE_CPU, QUEUE_GPU, QUEUES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "api", "worker-cpu", "worker-gpu"}
    assert services["api"]["build"]["dockerfile"] == "Dockerfile.cpu"
    assert services["worker-cpu"]["build"]["dockerfile"] == "Dockerfile.cpu"
    assert services["worker-gpu"]["build"]["dockerfile"] == "Dockerfile.gpu"
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name} has no healthcheck"


def test_redis_persists_append_only_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and _flag(redis["command"], "--appendonly") == "yes"
    volume = redis["volumes"][0].split(":")
    assert volume[0] in compose["volumes"] and volume[1] == "/data"


def test_worker_queues_match_the_code(compose: dict[str, Any]) -> None:
    services = compose["services"]
    cpu, gpu = services["worker-cpu"]["command"], services["worker-gpu"]["command"]
    assert cpu[:3] == ["celery", "-A", "workers.celery_app"] and gpu[:3] == cpu[:3]
    assert _flag(cpu, "-Q") == QUEUE_CPU and _flag(gpu, "-Q") == QUEUE_GPU
    assert {_flag(cpu, "-Q"), _flag(gpu, "-Q")} == set(QUEUES)
    assert _flag(gpu, "-c") == "1"
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["driver"] == "nvidia" and "gpu" in devices["capabilities"]
    import workers.celery_app  # the -A target must import

    assert workers.celery_app.app.main == "slimbert"


def test_api_command_and_port(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    command = api["command"]
    assert "app.main:create_app" in command and "--factory" in command
    port = _flag(command, "--port")
    assert api["ports"] == [f"{port}:{port}"]
    assert f"localhost:{port}/healthz" in " ".join(api["healthcheck"]["test"])
    from app.main import create_app

    assert "/healthz" in create_app().openapi()["paths"]


def test_environment_names_settings_and_store_path_agrees(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in ("api", "worker-cpu", "worker-gpu"):
        svc = compose["services"][name]
        env = svc["environment"]
        for key in env:
            assert key.startswith("SLIMBERT_") and key.removeprefix("SLIMBERT_").lower() in fields, key
        # "source:target[:mode]", where the source may be "${VAR:-default}"
        mounts = {m.rsplit("}", 1)[-1].split(":")[1]: m.rsplit("}", 1)[0] if "}" in m else m.split(":")[0]
                  for m in svc["volumes"]}
        assert mounts[env["SLIMBERT_STORE_DIR"]] == "models-store", f"{name} store volume"
        assert env["SLIMBERT_SST2_DIR"] in mounts
        host, port = re.match(r"redis://([^:/]+):(\d+)", env["SLIMBERT_REDIS_URL"]).groups()  # type: ignore[union-attr]
        assert host == "redis" and port == "6379"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        Settings(**{k.removeprefix("SLIMBERT_").lower(): v for k, v in env.items()}, _env_file=None)


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_copy_what_exists_and_pin_torch(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    for src in re.findall(r"^COPY (\S+)", text, flags=re.M):
        assert (ROOT / src).exists(), f"{dockerfile} copies missing {src}"
    assert '"torch==2.13.0"' in text
    index = re.search(r"--index-url (\S+) \"torch", text)
    assert index is not None
    assert index.group(1).endswith("/cpu" if dockerfile.endswith("cpu") else "/cu128")
    if dockerfile.endswith("gpu"):
        assert "bitsandbytes" in text


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*SLIMBERT_([A-Z0-9_]+)=", text, flags=re.M))
    assert documented == {name.upper() for name in Settings.model_fields}
