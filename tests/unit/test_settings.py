from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from slimbert.config import Settings


def test_defaults_resolve_paths(tmp_path: Path) -> None:
    s = Settings(store_dir=tmp_path / "store", _env_file=None)  # type: ignore[call-arg]
    assert s.store_dir.is_absolute()
    assert s.job_dir == s.store_dir / ".jobs"
    assert s.default_model_id == "sentence-transformers/all-MiniLM-L6-v2"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLIMBERT_REDIS_URL", "redis://127.0.0.1:6390/3")
    monkeypatch.setenv("SLIMBERT_API_KEYS", '{"k1": "admin", "k2": "predict"}')
    monkeypatch.setenv("SLIMBERT_JOBS_DIR", str(tmp_path / "jobs"))
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.redis_url.endswith(":6390/3")
    assert s.api_keys == {"k1": "admin", "k2": "predict"}
    assert s.job_dir == tmp_path / "jobs"


@pytest.mark.parametrize(
    ("field", "value"),
    [("redis_url", "http://localhost"), ("max_texts_per_request", 0), ("api_keys", {"k": "root"}),
     ("worker_ping_timeout_s", 0)],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(**{field: value}, _env_file=None)  # type: ignore[arg-type]
    assert field in str(err.value)
