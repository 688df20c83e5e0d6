"""Files shipped with the package: the demo model (see scripts/make_demo_model.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ASSETS_DIR = Path(__file__).resolve().parent


def demo_model_path() -> Path:
    """The bundled 64-256-256-10 MLP trained on digits (safetensors weights)."""
    return ASSETS_DIR / "demo_mlp_digits.safetensors"


def demo_model_spec() -> dict[str, Any]:
    """The demo model's zoo architecture and config: ``{"arch", "arch_config"}``."""
    return json.loads((ASSETS_DIR / "demo_mlp_digits.json").read_text(encoding="utf-8"))
