"""POST/GET/DELETE /datasets against a temporary store: uploads, named paths, refusals, and the doors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from slimbert.config import Settings
from slimbert.store.manifest import Technique, VariantManifest
from slimbert.store.store import VariantStore
from tests.api.test_api import _settings

ERROR_KEYS = {"error", "detail", "hint"}
FORM = {"name": "tickets", "text_column": "text", "label_column": "label"}
ROWS = "".join(f'"ticket {i}, about {y}",{y}\n' for i in range(12) for y in ("billing issue", "login", "refund"))
CSV = ("text,label\n" + ROWS).encode()


def _dataset_settings(tmp_path: Path, **kw: object) -> Settings:
    (tmp_path / "data").mkdir(exist_ok=True)
    return _settings(tmp_path, allowed_data_roots=[tmp_path / "data"], **kw)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_dataset_settings(tmp_path))) as c:
        yield c


def _upload(c: TestClient, body: bytes = CSV, filename: str = "tickets.csv", **fields: str) -> httpx.Response:
    return c.post("/datasets", data=FORM | fields, files={"file": (filename, body, "text/csv")})


def test_upload_list_show(client: TestClient) -> None:
    resp = _upload(client, model="sentence-transformers/all-MiniLM-L6-v2")
    assert resp.status_code == 201, resp.text
    manifest = resp.json()
    assert manifest["name"] == "tickets" and manifest["source"] == "upload"
    assert manifest["label_names"] == ["billing issue", "login", "refund"]
    assert manifest["splits"]["train"]["rows"] == 36 and manifest["splits_given"] == ["train"]
    assert manifest["files"][0]["name"] == "tickets.csv" and manifest["files"][0]["bytes"] == len(CSV)
    assert manifest["lengths_in"] == "tokens of sentence-transformers/all-MiniLM-L6-v2"
    assert [m["name"] for m in client.get("/datasets").json()] == ["tickets"]
    assert client.get("/datasets/tickets").json() == manifest
    missing = client.get("/datasets/nope")
    assert missing.status_code == 404 and "tickets" in missing.json()["hint"]


def test_per_split_files(client: TestClient) -> None:
    test = b"text,label\nmy refund?,refund\n"
    resp = client.post("/datasets", data=FORM, files={"train": ("tr.csv", CSV), "test": ("te.csv", test)})
    assert resp.status_code == 201, resp.text
    assert resp.json()["splits_given"] == ["train", "test"] and resp.json()["splits"]["test"]["rows"] == 1


def test_an_empty_text_is_a_422_naming_the_row(client: TestClient) -> None:
    resp = _upload(client, CSV + b'"",login\n')
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert set(body) == ERROR_KEYS and body["error"] == "DatasetInvalid"
    assert "file tickets.csv, row 38, column text: empty text" in body["detail"] and body["hint"]
    assert client.get("/datasets").json() == []


def test_a_duplicate_name_is_a_409(client: TestClient) -> None:
    assert _upload(client).status_code == 201
    resp = _upload(client)
    assert resp.status_code == 409 and "another name" in resp.json()["hint"]


def test_delete_is_refused_while_a_variant_uses_it(tmp_path: Path, client: TestClient) -> None:
    assert _upload(client).status_code == 201
    assert _upload(client, name="spare").status_code == 201
    store = VariantStore(tmp_path / "store")
    with store.staging("tickets-fam", "baseline-fp32") as staged:
        (staged / "config.json").write_text("{}")
        store.publish(staged, VariantManifest(
            family="tickets-fam", variant="baseline-fp32", runtime="torch", precision="fp32", base_model_id="tiny",
            technique=Technique(name="finetune"), labels={0: "billing issue", 1: "login", 2: "refund"},
            num_parameters=1, dataset="tickets"))
    resp = client.delete("/datasets/tickets")
    assert resp.status_code == 409 and "tickets-fam/baseline-fp32" in resp.json()["detail"], resp.text
    assert client.get("/datasets/tickets").status_code == 200
    assert client.delete("/datasets/spare").status_code == 200
    assert [m["name"] for m in client.get("/datasets").json()] == ["tickets"]


def test_json_path_under_the_allowed_roots_and_outside_them(tmp_path: Path, client: TestClient) -> None:
    (tmp_path / "data" / "tickets.csv").write_bytes(CSV)
    resp = client.post("/datasets", json=FORM | {"path": str(tmp_path / "data" / "tickets.csv")})
    assert resp.status_code == 201, resp.text
    assert resp.json()["source"] == f"path:{tmp_path / 'data' / 'tickets.csv'}"
    (tmp_path / "elsewhere.csv").write_bytes(CSV)
    resp = client.post("/datasets", json=FORM | {"name": "other", "path": str(tmp_path / "elsewhere.csv")})
    assert resp.status_code == 422 and str(tmp_path / "data") in resp.json()["hint"], resp.text
    both = client.post("/datasets", json=FORM | {"name": "x", "path": "a", "hub_id": "b"})
    assert both.status_code == 422 and set(both.json()) == ERROR_KEYS
    hub = client.post("/datasets", json=FORM | {"name": "x", "hub_id": "no-such/dataset"})
    assert hub.status_code == 422 and hub.json()["error"] == "DatasetUnavailable"


def test_an_upload_over_the_limit_is_refused_while_streaming(tmp_path: Path) -> None:
    with TestClient(create_app(_dataset_settings(tmp_path, max_dataset_mb=1))) as c:
        resp = _upload(c, b"text,label\n" + b"x,a\n" * 300_000)
        assert resp.status_code == 413 and "SLIMBERT_MAX_DATASET_MB" in resp.json()["hint"], resp.text
        # Without a Content-Length (chunked) the cut-off happens while the body streams in.
        boundary = "b0undary"
        head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                       for k, v in FORM.items())
        head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.csv"\r\n\r\ntext,label\n'

        def body() -> Iterator[bytes]:
            yield head.encode()
            for _ in range(20):
                yield b"x,a\n" * 25_000
            yield f"\r\n--{boundary}--\r\n".encode()

        kind = {"content-type": f"multipart/form-data; boundary={boundary}"}
        resp = c.post("/datasets", content=body(), headers=kind)
        assert "content-length" not in {k.lower() for k in resp.request.headers}
        assert resp.status_code == 413 and "1 MB limit" in resp.json()["detail"], resp.text
        assert c.get("/datasets").json() == []


def test_bad_uploads_are_4xx_with_the_error_body(client: TestClient) -> None:
    for resp in (_upload(client, filename="tickets.xlsx"), _upload(client, text_column="body"),
                 client.post("/datasets", data=FORM), client.post("/datasets", content=b"x")):
        assert 400 <= resp.status_code < 500 and set(resp.json()) == ERROR_KEYS, resp.text
    assert "'text', 'label'" in _upload(client, text_column="body").json()["detail"]


def test_writes_need_the_admin_role(tmp_path: Path) -> None:
    keys = {"adm-key-123456": "admin", "prd-key-123456": "predict"}
    with TestClient(create_app(_dataset_settings(tmp_path, api_keys=keys, open_predict=False))) as c:
        predict, admin = {"X-API-Key": "prd-key-123456"}, {"X-API-Key": "adm-key-123456"}
        resp = c.post("/datasets", data=FORM, files={"file": ("t.csv", CSV)}, headers=predict)
        assert resp.status_code == 403
        assert c.post("/datasets", data=FORM, files={"file": ("t.csv", CSV)}, headers=admin).status_code == 201
        assert c.get("/datasets", headers=predict).status_code == 200
        assert c.delete("/datasets/tickets", headers=predict).status_code == 403
        assert c.delete("/datasets/tickets").status_code == 401


def test_openapi_declares_both_bodies_and_the_errors(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/datasets"]["post"]
    assert set(op["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"201", "409", "413", "422"} <= set(op["responses"])
    assert op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("DatasetManifest")
