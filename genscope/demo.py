"""``genscope demo``: a family of small models on digits, analysed through the real service.

Trains MLPs that differ in width, label noise (Zhang et al. 2017) and weight decay, starts
``genscope serve`` on the embedded defaults, uploads the models through the HTTP API, runs the
analyses on the worker, creates a comparison and prints its URL.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

DEMO_MEASURES = (
    "margin.output,margin.normalized,complexity.path_norm,complexity.spectral,bound.spectral"
)


DEMO_FAMILY = (  # (hidden width, label-noise fraction, weight decay)
    (128, 0.0, 0.0),
    (128, 0.5, 0.0),
    (32, 0.0, 0.0),
    (128, 0.0, 1e-3),
    (128, 0.25, 0.0),
    (32, 0.5, 0.0),
    (512, 0.0, 0.0),
    (512, 0.5, 0.0),
)


def train_family(folder: Path, n_models: int) -> list[dict[str, Any]]:
    """Train MLPs on digits (150 full-batch Adam steps, under a second each) as safetensors.

    Label noise replaces a fraction of the training labels with random ones (Zhang et al. 2017),
    so the family spans models that memorise to different degrees.
    """
    import torch
    from safetensors.torch import save_file

    from genscope.io.datasets import load_dataset
    from genscope.io.zoo import build_model

    data = load_dataset("digits")
    x, y = data.x_train, data.y_train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and immune to a busy machine
    out = []
    for k, (width, noise, decay) in enumerate(DEMO_FAMILY[:n_models]):
        gen = torch.Generator().manual_seed(100 + k)
        labels = y.clone()
        flip = torch.rand(len(labels), generator=gen) < noise
        labels[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=gen)
        torch.manual_seed(k)
        config = {"input_dim": 64, "widths": [width], "num_classes": 10}
        model = build_model("mlp", config)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=decay)
        for _ in range(150):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), labels)
            loss.backward()
            opt.step()
        name = f"mlp{width}-noise{int(noise * 100)}" + ("-wd" if decay else "")
        path = folder / f"{name}.safetensors"
        save_file({k2: v.detach().contiguous() for k2, v in model.state_dict().items()}, path)
        out.append({"name": name, "path": path, "config": config, "loss": float(loss.detach())})
    torch.set_num_threads(threads)
    return out


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` now (the OS picks it)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_demo(
    host: str,
    port: int,
    measures: str,
    n_models: int,
    exit_when_done: bool,
    console: Console,
) -> int:
    """The demo: train, start the service, submit through the real API, compare, print URLs."""
    import signal
    import subprocess
    import tempfile
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    port = port or free_port(host)
    base = f"http://{host}:{port}"
    with tempfile.TemporaryDirectory(prefix="genscope-demo-") as tmp:
        t0 = time.monotonic()
        console.print(f"training {n_models} MLPs on digits ...")
        family = train_family(Path(tmp), n_models)
        console.print(f"trained in {time.monotonic() - t0:.1f} s; starting the server ...")
        server = subprocess.Popen(
            [sys.executable, "-m", "genscope.cli", "serve", "--host", host, "--port", str(port)],
            env=dict(os.environ),
            start_new_session=exit_when_done,
        )
        # SIGTERM (a service manager, `kill`) stops the server too, as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                deadline = time.monotonic() + 90
                while True:
                    if server.poll() is not None:
                        raise RuntimeError(f"the server exited with status {server.returncode}")
                    try:
                        if client.get("/api/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("the server did not start within 90 s")
                    time.sleep(0.3)
                t_up = time.monotonic()

                def submit(item: dict[str, Any]) -> str:
                    with open(item["path"], "rb") as fh:
                        answer = client.post(
                            "/api/checkpoints",
                            files={"file": (item["path"].name, fh)},
                            data={
                                "name": item["name"],
                                "arch": "mlp",
                                "arch_config": json.dumps(item["config"]),
                            },
                        )
                    if answer.status_code != 201:
                        raise RuntimeError(f"upload refused: {answer.text}")
                    run = client.post(
                        "/api/runs",
                        json={
                            "checkpoint_id": answer.json()["id"],
                            "dataset": "digits",
                            "measures": measures.split(","),
                        },
                    )
                    if run.status_code != 202:
                        raise RuntimeError(f"run refused: {run.text}")
                    return str(run.json()["id"])

                # uploads are inspected in subprocesses by the server: send a few at once
                with ThreadPoolExecutor(max_workers=3) as pool:
                    run_ids = list(pool.map(submit, family))
                names = {run_id: item["name"] for run_id, item in zip(run_ids, family, strict=True)}
                console.print(
                    f"uploaded and submitted {len(run_ids)} runs in "
                    f"{time.monotonic() - t_up:.1f} s; waiting for the worker ..."
                )
                failed = 0
                pending = set(run_ids)
                deadline = time.monotonic() + 600
                while pending and time.monotonic() < deadline:
                    for run_id in sorted(pending):
                        state = client.get(f"/api/runs/{run_id}", params={"report": "false"})
                        body = state.json()
                        if body["status"] in ("succeeded", "failed"):
                            pending.discard(run_id)
                            failed += body["status"] == "failed"
                            console.print(f"  {names[run_id]:<22} {body['status']}")
                    time.sleep(0.5)
                if pending:
                    raise RuntimeError(f"{len(pending)} runs did not finish in time")
                comparison = client.post(
                    "/api/comparisons",
                    json={"run_ids": run_ids, "title": "Digits MLPs: width x label noise"},
                ).json()
            console.print(f"comparison: [bold]{comparison['url']}[/]", soft_wrap=True)
            console.print(f"share link: {comparison['share_url']}", soft_wrap=True)
            if exit_when_done:
                return 1 if failed else 0
            console.print("serving the dashboard; Ctrl-C stops it")
            server.wait()
            return 1 if failed else 0
        except KeyboardInterrupt:
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)
            if server.poll() is None:
                server.send_signal(signal.SIGINT if not exit_when_done else signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
