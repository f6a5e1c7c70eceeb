"""No Docker engine runs here, so check what can be checked: the compose file and Dockerfiles agree
with the code and the settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from slimbert.config import Settings, check_exposure
from slimbert.tasks import QUEUE_CPU, QUEUE_GPU, QUEUES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _default_services(compose: dict[str, Any]) -> dict[str, Any]:
    """The services a plain ``docker compose up`` starts: those under no profile."""
    return {name: svc for name, svc in compose["services"].items() if not svc.get("profiles")}


def _interpolate(value: object) -> object:
    """Compose's ``${VAR:-default}`` with VAR unset, as on a host that sets nothing."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value) if isinstance(value, str) else value


# Variables the AWS SDK reads itself (credentials stay out of the settings).
AWS_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = _default_services(compose)
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
            setting = key.startswith("SLIMBERT_") and key.removeprefix("SLIMBERT_").lower() in fields
            assert setting or key in AWS_ENV, key
        # "source:target[:mode]", where the source may be "${VAR:-default}"
        mounts = {m.rsplit("}", 1)[-1].split(":")[1]: m.rsplit("}", 1)[0] if "}" in m else m.split(":")[0]
                  for m in svc["volumes"]}
        assert mounts[env["SLIMBERT_STORE_DIR"]] == "models-store", f"{name} store volume"
        assert env["SLIMBERT_SST2_DIR"] in mounts
        host, port = re.match(r"redis://([^:/]+):(\d+)", env["SLIMBERT_REDIS_URL"]).groups()  # type: ignore[union-attr]
        assert host == "redis" and port == "6379"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        # Compose's "${VAR:?message}" makes the operator set VAR; here, as an operator would, set one.
        given = {k: {"a-long-random-key": "admin"} if str(v).startswith("${SLIMBERT_API_KEYS:?") else _interpolate(v)
                 for k, v in env.items() if k.startswith("SLIMBERT_")}
        settings = Settings(**{k.removeprefix("SLIMBERT_").lower(): v for k, v in given.items()}, _env_file=None)
        if name == "api":  # it listens on 0.0.0.0: closed by default, so compose demands a key
            assert settings.api_host == "0.0.0.0" and str(env["SLIMBERT_API_KEYS"]).startswith("${SLIMBERT_API_KEYS:?")
            check_exposure(settings)


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


def _user_of(dockerfile: str) -> tuple[str, str]:
    """(uid, gid) the image's final USER runs as, from its ARG defaults and useradd/groupadd lines."""
    text = (ROOT / dockerfile).read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    uid = re.search(r"useradd [^\n]*--uid \"?\$?\{?(\w+)", text)
    gid = re.search(r"groupadd [^\n]*--gid \"?\$?\{?(\w+)", text)
    assert uid and gid, f"{dockerfile} creates no user and group with fixed ids"
    user = re.findall(r"^USER (\S+)$", text, re.M)[-1]
    assert user == "slimbert:slimbert", f"{dockerfile} runs as {user}"
    return args.get(uid[1], uid[1]), args.get(gid[1], gid[1])


def test_every_image_runs_as_one_uid_and_gid() -> None:
    """Every service writes the shared models-store volume: a second uid could not write the first's files."""
    assert _user_of("Dockerfile.cpu") == _user_of("Dockerfile.gpu") == ("1000", "1000")
    # The CUDA base is Ubuntu 24.04, whose user "ubuntu" already holds 1000: it must be removed first.
    gpu = (ROOT / "Dockerfile.gpu").read_text()
    assert "ubuntu24.04" not in gpu or gpu.index("userdel --remove ubuntu") < gpu.index("useradd")


def test_job_records_and_reports_are_shared_with_the_group(tmp_path: Path) -> None:
    import stat

    from slimbert.jobs.store import JobRecord, JobStore
    from slimbert.store.store import VariantStore

    jobs = JobStore(tmp_path / "jobs")
    record = jobs.save(JobRecord(id=jobs.new_id()))
    report = VariantStore(tmp_path / "store").save_report("fam", "run-1", {"run_id": "run-1"})
    for path in (tmp_path / "jobs" / f"{record.id}.json", Path(report)):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o060 == 0o060, f"{path.name} is {oct(mode)}: another service cannot update it"


def test_build_context_leaves_out_the_venv_store_and_data() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "models_store", "data", ".git", "var"} <= ignored
    # ... but keeps what the Dockerfiles copy.
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        for src in re.findall(r"^COPY (\S+)", (ROOT / dockerfile).read_text(), re.M):
            assert src not in ignored, f"{dockerfile} copies {src}, which .dockerignore leaves out"


def test_data_mount_defaults_inside_the_project(compose: dict[str, Any]) -> None:
    for name in ("api", "worker-cpu", "worker-gpu"):
        mounts = [v for v in compose["services"][name]["volumes"] if v.endswith(":/data/sst2:ro")]
        assert mounts == ["${SST2_DIR:-./data/sst2}:/data/sst2:ro"], name


def test_the_s3_profile_runs_minio_and_points_every_service_at_it(compose: dict[str, Any], tmp_path: Path) -> None:
    """``--profile s3`` adds minio and a one-shot that makes the bucket; the services read the bucket's URL,
    endpoint and credentials from the shell, and without them keep the local store."""
    services = compose["services"]
    minio, init = services["minio"], services["minio-bucket"]
    assert minio["profiles"] == ["s3"] and init["profiles"] == ["s3"]
    assert minio["image"] == init["image"] and ":RELEASE." in minio["image"]  # pinned: mc ships in the image
    assert "mc" in minio["healthcheck"]["test"] and minio["volumes"][0].split(":")[0] in compose["volumes"]
    assert all(port.startswith("127.0.0.1:") for port in minio["ports"])  # not open beyond loopback by default
    assert init["depends_on"]["minio"]["condition"] == "service_healthy" and init["restart"] == "no"
    assert "mc mb --ignore-existing" in init["entrypoint"][-1]
    # The same credentials on both sides: minio's root user is the key the services sign with.
    assert minio["environment"]["MINIO_ROOT_USER"] == compose["x-env"]["AWS_ACCESS_KEY_ID"]
    assert minio["environment"]["MINIO_ROOT_PASSWORD"] == compose["x-env"]["AWS_SECRET_ACCESS_KEY"]
    from slimbert.store.bucket import BucketVariantStore, open_variant_store

    for name in ("api", "worker-cpu", "worker-gpu"):
        env = services[name]["environment"]
        assert env["SLIMBERT_STORE_URL"] == "${SLIMBERT_STORE_URL:-}"
        assert env["SLIMBERT_S3_ENDPOINT_URL"] == "${SLIMBERT_S3_ENDPOINT_URL:-}"
        assert AWS_ENV <= set(env)
    # What the documented command sets, read the way a service reads it.
    documented = Settings(store_url="s3://slimbert/store", s3_endpoint_url="http://minio:9000",
                          store_dir=tmp_path / "cache", _env_file=None)  # type: ignore[call-arg]
    assert isinstance(open_variant_store(documented), BucketVariantStore)
    bucket = re.search(r"MINIO_BUCKET:-(\w+)", str(init["environment"]["MINIO_BUCKET"]))
    assert bucket and documented.store_url and documented.store_url.startswith(f"s3://{bucket[1]}/")
    header = (ROOT / "docker-compose.yml").read_text().split("x-env:")[0]
    assert "--profile s3" in header and f"SLIMBERT_STORE_URL={documented.store_url}" in header
