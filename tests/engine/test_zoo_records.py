"""The zoo is one record per architecture (genscope.io.zoo.catalogue): the records agree with
the public functions, with the network classes, and declare everything without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from genscope.io.zoo import (
    ARCH_NAMES,
    build_model,
    describe_architectures,
    estimate_num_params,
    validate_config,
)
from genscope.io.zoo.architecture import Architecture, no_cross_check
from genscope.io.zoo.archs.mlp import ACTIVATION_NAMES
from genscope.io.zoo.catalogue import ARCHITECTURES, lookup
from genscope.io.zoo.fields import FIELD_TYPES, Field, num_classes_field


def test_the_catalogue_lists_each_record_once_in_order() -> None:
    assert tuple(a.name for a in ARCHITECTURES) == ARCH_NAMES
    assert len(set(ARCH_NAMES)) == len(ARCH_NAMES)
    assert [d["name"] for d in describe_architectures()] == list(ARCH_NAMES)
    for arch in ARCHITECTURES:
        assert lookup(arch.name.upper()) is arch


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_each_record_is_complete(arch: Architecture) -> None:
    names = [f.name for f in arch.fields]
    assert len(set(names)) == len(names), names
    assert all(f.type in FIELD_TYPES for f in arch.fields)
    assert arch.size_keys and set(arch.size_keys) <= set(names)
    assert (
        arch.description.strip()
        and arch.description == describe_architectures()[ARCH_NAMES.index(arch.name)]["description"]
    )
    full = validate_config(arch.name, None)
    assert list(full) == names
    assert estimate_num_params(arch.name, None) == arch.count_params(full)


def test_activation_names_match_the_network_classes() -> None:
    from genscope.io.zoo.nets import ACTIVATIONS

    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
    assert all(isinstance(ACTIVATIONS[name](), torch.nn.Module) for name in ACTIVATION_NAMES)


def test_a_record_alone_validates_counts_and_builds() -> None:
    """An architecture needs nothing beyond its record: here a softmax regression declared in
    the test, validated, counted and built through the record's own methods."""

    def build(cfg: dict[str, object]) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(cfg["inputs"], 3))

    softmax = Architecture(
        name="softmax",
        description="Softmax regression.",
        fields=(num_classes_field(), Field("inputs", "int", 4, "Input size.", min=1, max=64)),
        count_params=lambda cfg: cfg["inputs"] * 3 + 3,
        build=build,
        size_keys=("inputs",),
    )
    assert softmax.cross_check is no_cross_check
    cfg = softmax.normalise({"inputs": 6})
    assert cfg == {"num_classes": 10, "inputs": 6}
    model = softmax.build(cfg)
    assert sum(p.numel() for p in model.parameters()) == softmax.count_params(cfg) == 21
    from genscope.errors import BadArchitecture

    with pytest.raises(BadArchitecture, match=r"softmax: 'inputs' must be <= 64; got 65"):
        softmax.normalise({"inputs": 65})
    with pytest.raises(BadArchitecture, match=r"softmax: unknown config key 'depth'"):
        softmax.normalise({"depth": 2})


def test_validation_and_the_catalogue_need_no_torch() -> None:
    """The API and the dashboard can check configs and list the zoo in their own process."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        from genscope.io.zoo import describe_architectures, estimate_num_params, validate_config
        from genscope.errors import BadArchitecture
        assert len(describe_architectures()) == 7
        assert validate_config("resnet", {"depth": 20})["width"] == 16
        assert estimate_num_params("mlp", {"input_dim": 64, "widths": [16]}) == 64 * 16 + 16 + 170
        try:
            validate_config("vgg", {"depth": 12})
        except BadArchitecture as exc:
            assert exc.detail["key"] == "depth"
        else:
            raise SystemExit("no error")
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_build_model_goes_through_the_record() -> None:
    torch.manual_seed(0)
    for arch in ARCHITECTURES:
        cfg = validate_config(arch.name, {"num_classes": 3} | _SMALL[arch.name])
        model = build_model(arch.name, cfg)
        assert sum(p.numel() for p in model.parameters()) == arch.count_params(cfg)


_SMALL: dict[str, dict[str, object]] = {
    "mlp": {"input_dim": 4, "widths": [5]},
    "lenet": {"in_channels": 1, "input_size": 8},
    "vgg": {"depth": 11, "width_multiplier": 0.0625},
    "resnet": {"depth": 8, "width": 2},
    "preact_resnet18": {"width": 2},
    "wide_resnet": {"depth": 10, "widen_factor": 1},
    "nin": {"depth": 1, "width": 4},
}


def test_the_docs_list_every_architecture() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "zoo.md").read_text()
    for arch in ARCHITECTURES:
        assert f"| `{arch.name}` | {arch.description} |" in page, arch.name
