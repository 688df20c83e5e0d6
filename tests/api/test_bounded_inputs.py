"""Bounded inputs, on SQLite and PostgreSQL: multipart forms past their bounds
answer 413 and leave nothing behind, while the API's memory stays small; memory-related measure
parameters are capped; a lone surrogate anywhere answers 422 and never breaks the listings."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from backend.blobs import BlobStore
from backend.core.db import session_scope
from backend.models import Run
from backend.schemas import ComparisonCreate, RunCreate
from backend.uploads import MAX_HEADER_BYTES, receive_upload
from tests.conftest import upload_checkpoint

BOUNDARY = "genscope-test-boundary"
SURROGATE = "\\ud800"  # the JSON escape of a lone surrogate, sent as raw JSON text
LISTINGS = ("/api/runs", "/api/checkpoints", "/api/comparisons", "/api/datasets")


def _form(fields: list[tuple[str, str]], file: bytes = b"x" * 16) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="t.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + file
        + b"\r\n"
    )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _post_form(client: Any, body: bytes, path: str = "/api/checkpoints") -> Any:
    return client.post(
        path,
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )


def _tmp_left(client: Any) -> list[Any]:
    return BlobStore(client.settings.blob_dir).tmp_files()


def _run_count(client: Any) -> int:
    with session_scope(client.settings.sqlalchemy_url) as session:
        return int(session.scalar(select(func.count()).select_from(Run)) or 0)


# --- multipart ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/checkpoints", "/api/datasets"])
def test_ten_thousand_fields_answer_413_and_leave_nothing(client: Any, path: str) -> None:
    answer = _post_form(client, _form([(f"f{i}", "") for i in range(10_000)]), path)
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "payload_too_large"
    assert "GENSCOPE_MAX_FORM_FIELDS" in answer.json()["message"]
    assert _tmp_left(client) == []


def test_file_before_many_fields_is_removed(client: Any) -> None:
    body = _form([])[: -len(f"--{BOUNDARY}--\r\n")] + _form([(f"f{i}", "") for i in range(100)])
    answer = _post_form(client, body)
    assert answer.status_code == 413, answer.text
    assert _tmp_left(client) == []


def test_text_fields_over_the_form_limit_answer_413(make_client: Any) -> None:
    client = make_client(max_form_kb=4)
    fields = [(f"f{i}", "v" * 1500) for i in range(4)]  # 6 KB of text in 4 fields
    answer = _post_form(client, _form(fields))
    assert answer.status_code == 413, answer.text
    assert "GENSCOPE_MAX_FORM_KB" in answer.json()["message"]
    assert _tmp_left(client) == []


def test_a_huge_part_header_answers_413(client: Any) -> None:
    header = "X-Padding: " + "h" * (MAX_HEADER_BYTES + 10)
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="arch"\r\n{header}\r\n\r\nmlp\r\n'
        f"--{BOUNDARY}--\r\n"
    ).encode()
    answer = _post_form(client, body)
    assert answer.status_code == 413, answer.text
    assert answer.json()["detail"]["max_header_bytes"] == MAX_HEADER_BYTES


class _StreamedRequest:
    """Just enough of a Starlette request for :func:`receive_upload`: headers and a stream."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
        self._chunks = chunks

    def stream(self) -> AsyncIterator[bytes]:
        return self._chunks


async def _many_fields(count: int) -> AsyncIterator[bytes]:
    for start in range(0, count, 1000):
        yield b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode()
            for i in range(start, start + 1000)
        )


MEMORY_CAP = 16 * 1024 * 1024  # the old parser held 176 MiB for a form like this one


def test_a_200k_field_form_is_refused_in_bounded_memory(client: Any) -> None:
    from backend.core.errors import ServiceError

    store = BlobStore(client.settings.blob_dir)
    tracemalloc.start()
    try:
        with pytest.raises(ServiceError) as refused:
            asyncio.run(
                receive_upload(_StreamedRequest(_many_fields(200_000)), store, 1 << 20)  # type: ignore[arg-type]
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.code == "payload_too_large"
    assert peak < MEMORY_CAP, f"peak {peak / 2**20:.1f} MiB"
    assert store.tmp_files() == []


def test_a_200k_field_form_with_a_high_field_limit_stays_bounded(client: Any) -> None:
    """Even where the field count is allowed to be huge, the text bound holds the memory."""
    from backend.core.errors import ServiceError

    store = BlobStore(client.settings.blob_dir)
    tracemalloc.start()
    try:
        with pytest.raises(ServiceError) as refused:
            asyncio.run(
                receive_upload(
                    _StreamedRequest(_many_fields(200_000)),  # type: ignore[arg-type]
                    store,
                    1 << 20,
                    max_fields=10**9,
                    max_form_bytes=1 << 20,
                )
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.code == "payload_too_large"
    assert peak < MEMORY_CAP, f"peak {peak / 2**20:.1f} MiB"


# --- memory parameters -------------------------------------------------------------------------


def test_a_huge_memory_budget_answers_422_and_stores_nothing(
    client: Any, tiny_checkpoint: bytes
) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    before = _run_count(client)
    answer = client.post(
        "/api/runs",
        json={
            "checkpoint_id": ckpt,
            "dataset": "moons",
            "measures": ["ntk.spectrum"],
            "params": {"ntk.spectrum": {"max_memory_mb": 1_000_000}},
        },
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "bad_parameter"
    assert "GENSCOPE_MAX_MEASURE_MEMORY_MB" in answer.json()["message"]
    assert _run_count(client) == before


def test_a_huge_batch_answers_422(client: Any, tiny_checkpoint: bytes) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    answer = client.post(
        "/api/runs",
        json={
            "checkpoint_id": ckpt,
            "dataset": "moons",
            "measures": ["sharpness.sam"],
            "params": {"sharpness.sam": {"batch_size": 50_000}},
        },
    )
    assert answer.status_code == 422, answer.text
    assert "GENSCOPE_MAX_MEASURE_BATCH" in answer.json()["message"]


def test_a_default_above_a_lowered_cap_is_stored_lowered(
    make_client: Any, tiny_checkpoint: bytes
) -> None:
    client = make_client(max_measure_memory_mb=64, max_measure_batch=16)
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    answer = client.post(
        "/api/runs",
        json={
            "checkpoint_id": ckpt,
            "dataset": "moons",
            "measures": ["ntk.spectrum", "sharpness.sam"],
        },
    )
    assert answer.status_code == 202, answer.text
    params = answer.json()["params"]
    assert params["ntk.spectrum"]["max_memory_mb"] == 64
    assert params["sharpness.sam"]["batch_size"] == 16


def test_every_memory_parameter_of_the_catalogue_is_capped(client: Any) -> None:
    """The catalogue's parameters that size what is held in memory at once are all matched."""
    from backend.api.routes.runs import memory_kind
    from backend.catalogue import measure_catalogue

    catalogue = measure_catalogue()
    held = {"max_memory_mb": "memory", "batch_size": "batch", "chunk_size": "batch"}
    for measure in catalogue:
        for param in measure.get("params", []):
            expected = held.get(param["name"])
            assert memory_kind(param) == expected, (measure["id"], param)


# --- lone surrogates ---------------------------------------------------------------------------


def _listings_answer(client: Any) -> None:
    for path in LISTINGS:
        assert client.get(path).status_code == 200, path


def _json_cases(ckpt: str, run_id: str) -> list[tuple[str, str, str]]:
    """``(path, field, raw JSON body)`` with a lone surrogate in one string field each, generated
    from the request schemas' fields."""
    valid_run = {"checkpoint_id": ckpt, "dataset": "moons", "measures": ["margin.output"]}
    cases: list[tuple[str, str, str]] = []
    for name in RunCreate.model_fields:
        body = dict(valid_run)
        if name in ("checkpoint_id", "dataset"):
            text = json.dumps(body).replace(f'"{body[name]}"', f'"{SURROGATE}"', 1)
        elif name == "measures":
            text = json.dumps(body).replace('"margin.output"', f'"{SURROGATE}"')
        elif name == "params":
            body["params"] = {"margin.output": {"@K@": "@V@"}}
            for which in ("@K@", "@V@"):
                cases.append(
                    ("/api/runs", f"params {which}", json.dumps(body).replace(which, SURROGATE))
                )
            body["params"] = {"@M@": {}}
            text = json.dumps(body).replace("@M@", SURROGATE)
        elif name == "options":
            body["options"] = {"dtype": "@D@"}
            text = json.dumps(body).replace("@D@", SURROGATE)
        else:
            continue
        cases.append(("/api/runs", name, text))
    for name in ComparisonCreate.model_fields:
        if name == "run_ids":
            cases.append(("/api/comparisons", name, f'{{"run_ids": ["{SURROGATE}"]}}'))
            cases.append(("/api/comparisons", name, f'{{"run_ids": ["{run_id}", "{SURROGATE}"]}}'))
        elif name == "title":
            cases.append(
                ("/api/comparisons", name, f'{{"run_ids": ["{run_id}"], "title": "{SURROGATE}"}}')
            )
    cases.append(("/api/comparisons", "unknown key", f'{{"{SURROGATE}": 1, "run_ids": []}}'))
    return cases


def test_a_lone_surrogate_in_any_json_field_answers_422(
    client: Any, tiny_checkpoint: bytes
) -> None:
    ckpt = upload_checkpoint(client, tiny_checkpoint).json()["id"]
    run = client.post(
        "/api/runs", json={"checkpoint_id": ckpt, "dataset": "moons", "measures": "margin.output"}
    )
    run_id = run.json()["id"]
    comparison = client.post("/api/comparisons", json={"run_ids": [run_id]}).json()
    before = _run_count(client)
    cases = _json_cases(ckpt, run_id)
    cases.append(
        (f"/api/comparisons/{comparison['id']}/share", "ShareCreate", f'{{"{SURROGATE}": 1}}')
    )
    for path, name, text in cases:
        answer = client.post(path, content=text, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, (name, answer.status_code, answer.text)
        _listings_answer(client)
    assert _run_count(client) == before


def test_a_lone_surrogate_in_arch_config_answers_422(client: Any, tiny_checkpoint: bytes) -> None:
    raw = '{"input_dim": 2, "widths": [8], "num_classes": 2, "note": "' + SURROGATE + '"}'
    body = _form([("arch", "mlp"), ("arch_config", raw)], tiny_checkpoint)
    answer = _post_form(client, body)
    assert answer.status_code == 422, answer.text
    key = '{"input_dim": 2, "widths": [8], "num_classes": 2, "' + SURROGATE + '": 1}'
    answer = _post_form(client, _form([("arch", "mlp"), ("arch_config", key)], tiny_checkpoint))
    assert answer.status_code == 422, answer.text
    assert _tmp_left(client) == []
    _listings_answer(client)


def test_invalid_utf8_form_fields_never_break_the_listings(
    client: Any, tiny_checkpoint: bytes
) -> None:
    """A form field is decoded with 'replace': the UTF-8 bytes of a surrogate arrive as U+FFFD,
    never as a surrogate; the upload is stored or refused, and the listings still answer."""
    raw = "\ud800".encode("utf-8", "surrogatepass")
    for name in ("name", "arch"):
        body = _form([(name, "x")], tiny_checkpoint).replace(
            b"\r\n\r\nx\r\n", b"\r\n\r\n" + raw + b"\r\n"
        )
        answer = _post_form(client, body)
        assert answer.status_code in (201, 200, 400, 422), answer.text
        _listings_answer(client)


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/%ED%A0%80",
        "/api/checkpoints/%ED%A0%80",
        "/api/comparisons/%ED%A0%80",
        "/api/runs?status=%ED%A0%80",
        "/api/runs?%ED%A0%80=1",
        "/api/share/%ED%A0%80",
    ],
)
def test_surrogate_bytes_in_path_and_query_never_answer_500(client: Any, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code in (200, 404, 422), answer.text  # percent-decoding gives U+FFFD
    _listings_answer(client)
