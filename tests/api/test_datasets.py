"""``/api/datasets`` (backend/api/routes/datasets.py): npz uploads, the built-in datasets beside
them in the listing, one dataset by name or id, refused files, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _npz(n_train: int = 40, n_test: int = 10, classes: int = 2, dim: int = 2) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=rng.normal(size=(n_train, dim)).astype(np.float32),
        y_train=rng.integers(0, classes, n_train),
        x_test=rng.normal(size=(n_test, dim)).astype(np.float32),
        y_test=rng.integers(0, classes, n_test),
    )
    return buf.getvalue()


def test_dataset_upload_list_and_errors(client: Any) -> None:
    answer = client.post("/api/datasets", files={"file": ("toy.npz", io.BytesIO(_npz()))})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["n_train"], body["n_test"], body["num_classes"]) == (40, 10, 2)
    listed = client.get("/api/datasets").json()
    ids = [d["id"] for d in listed["data"]]
    assert {"digits", "moons", "blobs", "linear"} <= set(ids) and body["id"] in ids
    buf = io.BytesIO()
    np.savez(buf, x_train=np.zeros((3, 2), np.float32))
    bad = client.post("/api/datasets", files={"file": ("bad.npz", io.BytesIO(buf.getvalue()))})
    assert bad.status_code == 422 and bad.json()["code"] == "bad_dataset"
    assert client.get("/api/datasets/digits").json()["kind"] == "builtin"
    assert client.get("/api/datasets/nope").status_code == 404
