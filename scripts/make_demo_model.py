"""Train the bundled demo model: a 64-256-256-10 ReLU MLP on the digits training split.

Deterministic (seed 0, full-batch Adam, 300 steps, a few seconds on a CPU). Writes
``genscope/assets/demo_mlp_digits.safetensors`` and its architecture spec beside it.

    python scripts/make_demo_model.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from genscope.io.datasets import load_dataset
from genscope.io.zoo import build_model

ASSETS = Path(__file__).resolve().parents[1] / "genscope" / "assets"
SPEC = {"arch": "mlp", "arch_config": {"input_dim": 64, "widths": [256, 256], "num_classes": 10}}


def main() -> None:
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = build_model(SPEC["arch"], SPEC["arch_config"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data.x_train), data.y_train)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(ASSETS / "demo_mlp_digits.safetensors"),
    )
    (ASSETS / "demo_mlp_digits.json").write_text(json.dumps(SPEC, indent=1) + "\n")
    print(f"final train loss {loss.item():.4f}, test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
