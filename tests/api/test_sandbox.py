"""The sandbox around every process that reads a user's file (``backend.sandbox``).

The allow-lists of the loaders are the first line; these tests assume they failed. A test-only
hook (:func:`escaping_boot`) replaces the sandboxed child's entry point with "execute the
uploaded file as Python", as if a loader had a hole, and the upload is a payload that tries to
get out: write outside its scratch directory (site-packages, the repository, the data
directory, the host's ``/tmp``), read the database file and another user's blob, open a socket
to a server listening on the host's loopback, and see the host's processes. Every attempt must
fail, through the API's inspection and through the worker's run, while writing its own scratch
directory works (the payload did run). The resource limits are shown on their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend import sandbox as sbx
from tests.conftest import mlp_state, safetensors_bytes, upload_checkpoint

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")

# The hook: the limits are set as in production (the same rlimits), then the input file named
# by the command line (inspection: ``inspect PATH``; a run: the spec's ``checkpoint``) is run.
_ESCAPING_BOOT = (
    "import json,resource,sys\n"
    "lim=json.loads(sys.argv[1])\n"
    "for name,(soft,hard) in lim['rlimits'].items():\n"
    "    resource.setrlimit(getattr(resource,name),(soft,hard))\n"
    "args=sys.argv[2:]\n"
    "path=args[1] if args[0]=='inspect' else json.load(open(args[0]))['checkpoint']\n"
    "exec(compile(open(path).read(),path,'exec'))\n"
)


@pytest.fixture
def escaping_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sandboxed children execute their input file (an allow-list bypassed on purpose)."""
    monkeypatch.setattr(sbx, "_BOOT", _ESCAPING_BOOT)


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback that the payload tries to reach."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


def _payload(targets: dict[str, Any], scratch_marker: str) -> str:
    """Python source that tries every escape and reports ``{attempt: outcome}``.

    It reports through the protocol of the process it replaced: an ``{"error": ...}`` line with
    exit status 2, whose message is the JSON of the outcomes (the API answers it as an error).
    """
    return textwrap.dedent(
        f"""
        import json, os, socket, sys
        T = {json.dumps(targets)!s}
        out = {{}}
        def attempt(name, fn):
            try:
                fn()
                out[name] = "done"
            except Exception as exc:
                out[name] = type(exc).__name__
        def write(path):
            with open(path, "w") as f:
                f.write("pwned")
        def read(path):
            with open(path, "rb") as f:
                f.read(16)
        for key, path in T["write"].items():
            attempt("write:" + key, lambda p=path: write(p))
        for key, path in T["read"].items():
            attempt("read:" + key, lambda p=path: read(p))
        def connect(port):
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.close()
        for key, port in T["connect"].items():
            attempt("connect:" + key, lambda p=port: connect(p))
        out["pids_seen"] = len([p for p in os.listdir("/proc") if p.isdigit()])
        attempt("scratch", lambda: write({scratch_marker!r}))
        out["uid"] = os.getuid()
        print(json.dumps({{"error": {{"code": "bad_request", "message": json.dumps(out)}}}}))
        sys.stdout.flush()
        os._exit(2)
        """
    )


def _targets(settings: Any, listener: int, tmp_path: Path) -> tuple[dict[str, Any], list[Path]]:
    """What the payload attacks, and the marker files that must not appear."""
    repo = Path(__file__).resolve().parents[2]
    site = Path(sysconfig.get_paths()["purelib"])
    markers = {
        "site_packages": site / "genscope-sandbox-escape.pth",
        "repository": repo / "genscope" / "sandbox_escape.py",
        "data_dir": Path(settings.data_dir) / "sandbox-escape",
        "blob_dir": Path(settings.blob_dir) / "sandbox-escape",
        "host_tmp": Path("/tmp") / f"genscope-sandbox-escape-{os.getpid()}",
    }
    victim = tmp_path / "other-users-blob"
    victim.write_bytes(b"secret weights")
    reads = {"other_blob": str(victim), "ssh_keys": "/root/.ssh/id_rsa", "shadow": "/etc/shadow"}
    db = settings.sqlalchemy_url
    if db.startswith("sqlite"):
        reads["database_file"] = db.split("///", 1)[1]
    connect = {"host_listener": listener, "postgresql": 5432, "redis": 6379}
    targets = {"write": {k: str(v) for k, v in markers.items()}, "read": reads, "connect": connect}
    return targets, list(markers.values())


def _assert_contained(outcome: dict[str, Any], markers: list[Path]) -> None:
    assert outcome["scratch"] == "done", outcome  # the payload ran: it could write its scratch
    for key, value in outcome.items():
        if key == "write:host_tmp":  # /tmp is the sandbox's own tmpfs: the host's stays clean
            continue
        if key.startswith(("write:", "read:", "connect:")):
            assert value != "done", (key, outcome)
    assert outcome["pids_seen"] <= 3, outcome  # its own pid namespace
    assert outcome["uid"] == sbx.SANDBOX_UID
    for marker in markers:
        assert not marker.exists(), marker


def test_payload_in_an_upload_cannot_get_out_of_the_inspection_sandbox(
    client: Any, escaping_boot: None, listener: int, tmp_path: Path
) -> None:
    targets, markers = _targets(client.settings, listener, tmp_path)
    payload = _payload(targets, "/scratch/ran").encode()
    answer = upload_checkpoint(client, payload, arch=None, name="model.pt2")
    assert answer.status_code == 400, answer.text
    _assert_contained(json.loads(answer.json()["message"]), markers)
    sha = hashlib.sha256(payload).hexdigest()
    assert all(c["sha256"] != sha for c in client.get("/api/checkpoints").json()["data"])


def test_payload_in_a_run_cannot_get_out_of_the_run_sandbox(
    client: Any, monkeypatch: pytest.MonkeyPatch, listener: int, tmp_path: Path
) -> None:
    from worker import sandboxed
    from worker.tasks import execute_run

    # weights no other test uploads: the database is shared by the session, and a cached result
    # for the same network would answer the run without starting a child at all
    weights = safetensors_bytes(mlp_state(seed=secrets.randbelow(10**9) + 10**6))
    ckpt = upload_checkpoint(client, weights).json()["id"]
    run = client.post(
        "/api/runs", json={"checkpoint_id": ckpt, "dataset": "moons", "measures": "margin.output"}
    ).json()["id"]
    targets, markers = _targets(client.settings, listener, tmp_path)
    payload = tmp_path / "payload.safetensors"
    payload.write_text(_payload(targets, "/scratch/ran"))
    real = sandboxed.analyze_in_sandbox

    def with_payload(settings: Any, progress: Any, _checkpoint: Path, *args: Any) -> Any:
        return real(settings, progress, payload, *args)

    monkeypatch.setattr(sandboxed, "analyze_in_sandbox", with_payload)
    monkeypatch.setattr(sbx, "_BOOT", _ESCAPING_BOOT)
    assert execute_run(client.settings, run, "task-escape") == "failed"
    error = client.get(f"/api/runs/{run}").json()["error"]
    _assert_contained(json.loads(error["message"]), markers)


def _run_sandboxed(
    code: str, limits: sbx.Limits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> subprocess.CompletedProcess[str]:
    """``code`` run in the production sandbox and limits, through the test-only hook."""
    monkeypatch.setattr(sbx, "_BOOT", _ESCAPING_BOOT)
    source = tmp_path / "probe.py"
    source.write_text(code)
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    box = sbx.Sandbox()
    argv = box.command(
        "genscope.cli",
        ["inspect", box.path_for(source)],
        scratch=scratch,
        inputs=[source],
        limits=limits,
    )
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=box.child_env(scratch)
    )


def test_memory_limit_stops_a_process_that_allocates_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = "blocks = [bytearray(64 << 20) for _ in range(64)]\nprint('allocated 4 GiB')\n"
    limits = sbx.Limits(memory_mb=512, cpu_seconds=60)
    proc = _run_sandboxed(code, limits, tmp_path, monkeypatch)
    assert proc.returncode != 0 and "MemoryError" in proc.stderr, proc.stderr[-2000:]
    assert "allocated" not in proc.stdout


def test_cpu_limit_stops_a_busy_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = sbx.Limits(memory_mb=256, cpu_seconds=1)
    proc = _run_sandboxed("while True:\n    pass\n", limits, tmp_path, monkeypatch)
    assert sbx.limit_hit(proc.returncode, limits) == "CPU time (1 s)", proc.returncode


def test_check_passes_here_and_fails_clearly_without_bubblewrap(tmp_path: Path) -> None:
    sbx.check(sbx.Sandbox(), tmp_path)
    with pytest.raises(sbx.SandboxUnavailable, match="GENSCOPE_SANDBOX"):
        sbx.check(sbx.Sandbox(bwrap="/nonexistent/bwrap"), tmp_path)


def test_service_refuses_to_start_without_the_sandbox(tmp_path: Path) -> None:
    """``genscope worker`` (and ``serve``) stop at start-up, naming the setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENSCOPE_")}
    env["GENSCOPE_DATA_DIR"] = str(tmp_path / "data")
    env["PATH"] = str(tmp_path / "no-bwrap")  # bwrap cannot be found
    proc = subprocess.run(
        [sys.executable, "-m", "genscope.cli", "worker"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "sandbox_unavailable" in proc.stderr and "GENSCOPE_SANDBOX=off" in proc.stderr


def test_inspections_beyond_the_limit_answer_503_and_store_nothing(make_client: Any) -> None:
    """``GENSCOPE_MAX_INSPECTIONS`` bounds the inspection processes alive at once (each may use
    ``GENSCOPE_INSPECT_MEMORY_MB``); a caller past it waits, then gets 503 with Retry-After."""
    from backend.inspection import inspection_slot

    client = make_client(max_inspections=1, inspect_queue_seconds=0.2)
    data = safetensors_bytes(mlp_state(seed=int.from_bytes(os.urandom(4), "little")))
    tmp = Path(client.settings.blob_dir, "tmp")
    before = set(tmp.iterdir()) if tmp.is_dir() else set()
    with inspection_slot(client.settings):  # the one slot is taken
        busy = upload_checkpoint(client, data)
    assert busy.status_code == 503, busy.text
    assert busy.json()["code"] == "server_busy" and busy.headers["Retry-After"] == "1"
    assert set(tmp.iterdir()) <= before  # the partial upload is gone
    listed = client.get("/api/checkpoints").json()["data"]
    sha = hashlib.sha256(data).hexdigest()
    assert all(c["sha256"] != sha for c in listed)
    assert upload_checkpoint(client, data).status_code == 201  # the slot is free again


def test_a_file_that_crashes_the_reader_answers_422_not_502(
    client: Any, escaping_boot: None
) -> None:
    """A reader killed by a signal (a segfault in a native parser) is the file's fault."""
    payload = b"import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    answer = upload_checkpoint(client, payload, arch=None, name="crash.pt2")
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "bad_checkpoint" and "SIGSEGV" in answer.json()["message"]
