"""``/api/checkpoints`` (backend/api/routes/checkpoints.py): upload, deduplication, reading and
listing; refused files (pickles, mismatched weights, garbage) and oversize uploads, on SQLite and
PostgreSQL."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import mlp_state, safetensors_bytes, upload_checkpoint


def test_upload_checkpoint_and_deduplicate(client: Any, tiny_checkpoint: bytes) -> None:
    first = upload_checkpoint(client, tiny_checkpoint)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["format"] == "safetensors"
    assert body["num_params"] == 8 * 2 + 8 + 2 * 8 + 2
    assert len(body["sha256"]) == 64 and body["arch"] == "mlp"
    again = upload_checkpoint(client, tiny_checkpoint)
    assert again.status_code == 201 and again.json()["id"] == body["id"]
    read = client.get(f"/api/checkpoints/{body['id']}")
    assert read.status_code == 200 and read.json()["sha256"] == body["sha256"]
    listed = client.get("/api/checkpoints", params={"limit": 500}).json()
    assert body["id"] in [c["id"] for c in listed["data"]] and listed["count"] >= 1


class _Evil:
    def __reduce__(self) -> Any:
        return (os.system, (f"touch {_Evil.marker}",))

    marker = ""


def test_pickle_upload_is_refused_and_never_unpickled(client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    answer = upload_checkpoint(client, pickle.dumps({"w": _Evil()}), name="model.pkl", arch=None)
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == "unsafe_checkpoint"
    assert "export" in body["message"].lower() or "pickl" in body["message"].lower()
    assert not marker.exists()
    assert client.app.dependency_overrides  # settings were swapped, not the environment


def test_bad_checkpoints_answer_engine_codes(client: Any) -> None:
    weights = safetensors_bytes(mlp_state())
    no_arch = upload_checkpoint(client, weights, arch=None)
    assert no_arch.status_code == 422 and no_arch.json()["code"] == "bad_checkpoint"
    assert "--arch" in no_arch.json()["message"] or "arch" in no_arch.json()["message"]
    wrong = upload_checkpoint(client, weights, config={**_moons(), "widths": [16]})
    assert wrong.status_code == 422 and wrong.json()["code"] == "weight_mismatch"
    garbage = upload_checkpoint(client, b"not a checkpoint at all", arch=None)
    assert garbage.status_code == 422 and garbage.json()["code"] == "bad_checkpoint"
    bad_json = upload_checkpoint(client, weights, config=None)
    assert bad_json.status_code == 201
    empty = client.post("/api/checkpoints", files={"file": ("x", io.BytesIO(b""))})
    assert empty.status_code == 400 and empty.json()["code"] == "bad_request"
    not_multipart = client.post("/api/checkpoints", content=b"abc")
    assert not_multipart.status_code == 415


def _moons() -> dict[str, Any]:
    return {"input_dim": 2, "widths": [8], "num_classes": 2}


@pytest.mark.parametrize("size_kb", [40, 400])
def test_oversize_upload_is_413_and_leaves_no_file(make_client: Any, size_kb: int) -> None:
    client = make_client(max_upload_mb=0.01)  # 10 KiB; 40 KiB streams, 400 KiB is refused early
    blobs = client.app.dependency_overrides  # noqa: F841 (documentation: settings overridden)
    data = os.urandom(size_kb * 1024)
    answer = client.post("/api/checkpoints", files={"file": ("big.bin", io.BytesIO(data))})
    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"
    blob_dir = client.settings.blob_dir
    assert [p for p in (blob_dir / "tmp").iterdir()] == []
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    assert not (blob_dir / "objects" / sha[:2] / sha).exists()
