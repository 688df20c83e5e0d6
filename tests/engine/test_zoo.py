"""Tests for the model zoo (genscope.io.zoo): shapes, parameter counts, names, validation."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import torch
from torch import nn

from genscope.errors import BadArchitecture
from genscope.io.zoo import (
    ARCH_NAMES,
    MAX_PARAMS,
    build_model,
    describe_architectures,
    estimate_num_params,
    validate_config,
)

# Small configs for the digits shape (1x8x8) and the CIFAR shape (3x32x32).
SMALL_DIGITS: dict[str, dict[str, Any]] = {
    "mlp": {"input_dim": 64, "widths": [16, 8]},
    "lenet": {"in_channels": 1, "input_size": 8},
    "vgg": {"depth": 11, "width_multiplier": 0.0625, "in_channels": 1, "input_size": 8},
    "resnet": {"depth": 20, "width": 4, "in_channels": 1, "input_size": 8},
    "preact_resnet18": {"width": 4, "in_channels": 1, "input_size": 8},
    "wide_resnet": {"depth": 10, "widen_factor": 1, "in_channels": 1, "input_size": 8},
    "nin": {"depth": 2, "width": 8, "in_channels": 1, "input_size": 8},
}
SMALL_CIFAR: dict[str, dict[str, Any]] = {
    "mlp": {"input_dim": 3072, "widths": [8], "num_classes": 100},
    "lenet": {"padding": "valid", "num_classes": 100},
    "vgg": {"depth": 11, "width_multiplier": 0.0625, "num_classes": 100},
    "resnet": {"depth": 18, "width": 4, "num_classes": 100},
    "preact_resnet18": {"width": 4, "num_classes": 100},
    "wide_resnet": {"depth": 10, "widen_factor": 1, "num_classes": 100},
    "nin": {"depth": 3, "width": 8, "num_classes": 100},
}

# Configs whose arithmetic estimate must equal the real parameter count.
COUNT_CASES: list[tuple[str, dict[str, Any] | None]] = [
    ("mlp", None),
    ("mlp", {"input_dim": 64, "widths": []}),
    ("mlp", {"input_dim": 2, "widths": [7, 5, 3], "bias": False, "num_classes": 2}),
    ("mlp", {"input_dim": 64, "widths": [32, 32], "batchnorm": True, "dropout": 0.5}),
    ("mlp", {"input_dim": 64, "widths": [32], "activation": "identity"}),
    ("lenet", None),
    ("lenet", {"in_channels": 1, "input_size": 28, "padding": "classic"}),
    ("lenet", {"input_size": 32, "padding": "valid", "activation": "tanh"}),
    ("lenet", {"in_channels": 1, "input_size": 8, "num_classes": 3}),
    ("lenet", {"input_size": 13, "padding": "same"}),
    ("vgg", None),
    ("vgg", {"depth": 11, "batchnorm": False}),
    ("vgg", {"depth": 13, "width_multiplier": 0.25, "in_channels": 1}),
    ("vgg", {"depth": 19, "width_multiplier": 0.3, "num_classes": 100}),
    ("resnet", None),
    ("resnet", {"depth": 18, "cifar_stem": False, "num_classes": 1000}),
    ("resnet", {"depth": 34, "cifar_stem": False, "width": 16}),
    ("resnet", {"depth": 20}),
    ("resnet", {"depth": 56, "width": 8, "in_channels": 1}),
    ("resnet", {"depth": 8, "width": 3, "num_classes": 2}),
    ("preact_resnet18", None),
    ("preact_resnet18", {"width": 8, "final_bn": True, "in_channels": 1}),
    ("wide_resnet", None),
    ("wide_resnet", {"depth": 16, "widen_factor": 2, "dropout": 0.3}),
    ("wide_resnet", {"depth": 10, "widen_factor": 1, "in_channels": 1}),
    ("nin", None),
    ("nin", {"depth": 4, "width": 32, "kernel_size": 5, "batchnorm": False, "dropout": 0.1}),
    ("nin", {"depth": 1, "width": 3, "kernel_size": 1, "stride": 1, "in_channels": 1}),
]

# Well-known parameter counts of the reference implementations.
KNOWN_COUNTS: list[tuple[str, dict[str, Any], int]] = [
    ("resnet", {"depth": 18, "cifar_stem": False, "num_classes": 1000}, 11_689_512),  # torchvision
    ("resnet", {"depth": 34, "cifar_stem": False, "num_classes": 1000}, 21_797_672),  # torchvision
    ("resnet", {"depth": 18}, 11_173_962),  # kuangliu ResNet18 (CIFAR stem)
    ("vgg", {"depth": 16}, 14_728_266),  # kuangliu VGG16
    ("preact_resnet18", {}, 11_171_146),  # kuangliu PreActResNet18
    ("wide_resnet", {"depth": 28, "widen_factor": 10}, 36_479_194),  # WRN-28-10
]

# torchvision.models.resnet18().state_dict(): keys (in order) and shapes.
TORCHVISION_RESNET18: list[tuple[str, tuple[int, ...]]] = [
    ("conv1.weight", (64, 3, 7, 7)),
    ("bn1.weight", (64,)),
    ("bn1.bias", (64,)),
    ("bn1.running_mean", (64,)),
    ("bn1.running_var", (64,)),
    ("bn1.num_batches_tracked", ()),
    ("layer1.0.conv1.weight", (64, 64, 3, 3)),
    ("layer1.0.bn1.weight", (64,)),
    ("layer1.0.bn1.bias", (64,)),
    ("layer1.0.bn1.running_mean", (64,)),
    ("layer1.0.bn1.running_var", (64,)),
    ("layer1.0.bn1.num_batches_tracked", ()),
    ("layer1.0.conv2.weight", (64, 64, 3, 3)),
    ("layer1.0.bn2.weight", (64,)),
    ("layer1.0.bn2.bias", (64,)),
    ("layer1.0.bn2.running_mean", (64,)),
    ("layer1.0.bn2.running_var", (64,)),
    ("layer1.0.bn2.num_batches_tracked", ()),
    ("layer1.1.conv1.weight", (64, 64, 3, 3)),
    ("layer1.1.bn1.weight", (64,)),
    ("layer1.1.bn1.bias", (64,)),
    ("layer1.1.bn1.running_mean", (64,)),
    ("layer1.1.bn1.running_var", (64,)),
    ("layer1.1.bn1.num_batches_tracked", ()),
    ("layer1.1.conv2.weight", (64, 64, 3, 3)),
    ("layer1.1.bn2.weight", (64,)),
    ("layer1.1.bn2.bias", (64,)),
    ("layer1.1.bn2.running_mean", (64,)),
    ("layer1.1.bn2.running_var", (64,)),
    ("layer1.1.bn2.num_batches_tracked", ()),
    ("layer2.0.conv1.weight", (128, 64, 3, 3)),
    ("layer2.0.bn1.weight", (128,)),
    ("layer2.0.bn1.bias", (128,)),
    ("layer2.0.bn1.running_mean", (128,)),
    ("layer2.0.bn1.running_var", (128,)),
    ("layer2.0.bn1.num_batches_tracked", ()),
    ("layer2.0.conv2.weight", (128, 128, 3, 3)),
    ("layer2.0.bn2.weight", (128,)),
    ("layer2.0.bn2.bias", (128,)),
    ("layer2.0.bn2.running_mean", (128,)),
    ("layer2.0.bn2.running_var", (128,)),
    ("layer2.0.bn2.num_batches_tracked", ()),
    ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
    ("layer2.0.downsample.1.weight", (128,)),
    ("layer2.0.downsample.1.bias", (128,)),
    ("layer2.0.downsample.1.running_mean", (128,)),
    ("layer2.0.downsample.1.running_var", (128,)),
    ("layer2.0.downsample.1.num_batches_tracked", ()),
    ("layer2.1.conv1.weight", (128, 128, 3, 3)),
    ("layer2.1.bn1.weight", (128,)),
    ("layer2.1.bn1.bias", (128,)),
    ("layer2.1.bn1.running_mean", (128,)),
    ("layer2.1.bn1.running_var", (128,)),
    ("layer2.1.bn1.num_batches_tracked", ()),
    ("layer2.1.conv2.weight", (128, 128, 3, 3)),
    ("layer2.1.bn2.weight", (128,)),
    ("layer2.1.bn2.bias", (128,)),
    ("layer2.1.bn2.running_mean", (128,)),
    ("layer2.1.bn2.running_var", (128,)),
    ("layer2.1.bn2.num_batches_tracked", ()),
    ("layer3.0.conv1.weight", (256, 128, 3, 3)),
    ("layer3.0.bn1.weight", (256,)),
    ("layer3.0.bn1.bias", (256,)),
    ("layer3.0.bn1.running_mean", (256,)),
    ("layer3.0.bn1.running_var", (256,)),
    ("layer3.0.bn1.num_batches_tracked", ()),
    ("layer3.0.conv2.weight", (256, 256, 3, 3)),
    ("layer3.0.bn2.weight", (256,)),
    ("layer3.0.bn2.bias", (256,)),
    ("layer3.0.bn2.running_mean", (256,)),
    ("layer3.0.bn2.running_var", (256,)),
    ("layer3.0.bn2.num_batches_tracked", ()),
    ("layer3.0.downsample.0.weight", (256, 128, 1, 1)),
    ("layer3.0.downsample.1.weight", (256,)),
    ("layer3.0.downsample.1.bias", (256,)),
    ("layer3.0.downsample.1.running_mean", (256,)),
    ("layer3.0.downsample.1.running_var", (256,)),
    ("layer3.0.downsample.1.num_batches_tracked", ()),
    ("layer3.1.conv1.weight", (256, 256, 3, 3)),
    ("layer3.1.bn1.weight", (256,)),
    ("layer3.1.bn1.bias", (256,)),
    ("layer3.1.bn1.running_mean", (256,)),
    ("layer3.1.bn1.running_var", (256,)),
    ("layer3.1.bn1.num_batches_tracked", ()),
    ("layer3.1.conv2.weight", (256, 256, 3, 3)),
    ("layer3.1.bn2.weight", (256,)),
    ("layer3.1.bn2.bias", (256,)),
    ("layer3.1.bn2.running_mean", (256,)),
    ("layer3.1.bn2.running_var", (256,)),
    ("layer3.1.bn2.num_batches_tracked", ()),
    ("layer4.0.conv1.weight", (512, 256, 3, 3)),
    ("layer4.0.bn1.weight", (512,)),
    ("layer4.0.bn1.bias", (512,)),
    ("layer4.0.bn1.running_mean", (512,)),
    ("layer4.0.bn1.running_var", (512,)),
    ("layer4.0.bn1.num_batches_tracked", ()),
    ("layer4.0.conv2.weight", (512, 512, 3, 3)),
    ("layer4.0.bn2.weight", (512,)),
    ("layer4.0.bn2.bias", (512,)),
    ("layer4.0.bn2.running_mean", (512,)),
    ("layer4.0.bn2.running_var", (512,)),
    ("layer4.0.bn2.num_batches_tracked", ()),
    ("layer4.0.downsample.0.weight", (512, 256, 1, 1)),
    ("layer4.0.downsample.1.weight", (512,)),
    ("layer4.0.downsample.1.bias", (512,)),
    ("layer4.0.downsample.1.running_mean", (512,)),
    ("layer4.0.downsample.1.running_var", (512,)),
    ("layer4.0.downsample.1.num_batches_tracked", ()),
    ("layer4.1.conv1.weight", (512, 512, 3, 3)),
    ("layer4.1.bn1.weight", (512,)),
    ("layer4.1.bn1.bias", (512,)),
    ("layer4.1.bn1.running_mean", (512,)),
    ("layer4.1.bn1.running_var", (512,)),
    ("layer4.1.bn1.num_batches_tracked", ()),
    ("layer4.1.conv2.weight", (512, 512, 3, 3)),
    ("layer4.1.bn2.weight", (512,)),
    ("layer4.1.bn2.bias", (512,)),
    ("layer4.1.bn2.running_mean", (512,)),
    ("layer4.1.bn2.running_var", (512,)),
    ("layer4.1.bn2.num_batches_tracked", ()),
    ("fc.weight", (1000, 512)),
    ("fc.bias", (1000,)),
]


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _case_id(case: tuple[str, dict[str, Any] | None]) -> str:
    name, cfg = case
    return name + ("" if not cfg else "-" + "-".join(f"{k}={v}" for k, v in cfg.items()))


# --------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------


def test_arch_names_and_describe() -> None:
    assert ARCH_NAMES == (
        "mlp",
        "lenet",
        "vgg",
        "resnet",
        "preact_resnet18",
        "wide_resnet",
        "nin",
    )
    described = describe_architectures()
    assert [d["name"] for d in described] == list(ARCH_NAMES)
    for d in described:
        assert d["description"]
        assert d["fields"], d["name"]
        for f in d["fields"]:
            assert {"name", "type", "default", "help"} <= set(f)
            assert f["type"] in {"int", "float", "bool", "str", "list[int]"}
            if "choices" in f and f["default"] is not None:
                assert f["default"] in f["choices"]
        # the described defaults are what validate_config fills in (None = depends on others)
        full = validate_config(d["name"], None)
        assert [f["name"] for f in d["fields"]] == list(full)
        for f in d["fields"]:
            if f["default"] is not None:
                assert full[f["name"]] == f["default"]
    # JSON-able
    import json

    json.dumps(described)


def test_validate_fills_defaults_and_normalises() -> None:
    cfg = validate_config("resnet", {"depth": 20})
    assert cfg == {
        "num_classes": 10,
        "in_channels": 3,
        "input_size": 32,
        "depth": 20,
        "cifar_stem": True,
        "width": 16,
    }
    assert validate_config("resnet", None)["width"] == 64
    assert validate_config("RESNET", {"depth": 34})["depth"] == 34
    assert validate_config("mlp", {"activation": "GELU", "dropout": 0})["activation"] == "gelu"
    assert validate_config("mlp", {"dropout": 0})["dropout"] == 0.0
    assert validate_config("mlp", {"widths": (4, 5)})["widths"] == [4, 5]
    # idempotent: a normalised config validates to itself (loaders re-validate)
    for name in ARCH_NAMES:
        for cfg in (None, SMALL_DIGITS[name]):
            full = validate_config(name, cfg)
            assert validate_config(name, full) == full
    # the input is not modified
    raw: dict[str, Any] = {"widths": [3]}
    validate_config("mlp", raw)
    assert raw == {"widths": [3]}


# --------------------------------------------------------------------------------------------
# Shapes, counts, names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_logits_shape_digits_and_cifar(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, SMALL_DIGITS[name]).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 1, 8, 8))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()

    model = build_model(name, SMALL_CIFAR[name])
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))  # train mode too
    assert out.shape == (2, 100)


@pytest.mark.parametrize("name", ["vgg", "resnet", "preact_resnet18", "wide_resnet", "nin"])
@pytest.mark.parametrize("size", [1, 5, 9, 28])
def test_adaptive_nets_accept_any_input_size(name: str, size: int) -> None:
    model = build_model(name, SMALL_DIGITS[name]).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, size, size)).shape == (2, 10)


def test_resnet_imagenet_stem_on_digits() -> None:
    cfg = {"depth": 18, "cifar_stem": False, "width": 4, "in_channels": 1, "input_size": 8}
    model = build_model("resnet", cfg).eval()
    assert isinstance(model.maxpool, nn.MaxPool2d)
    with torch.no_grad():
        assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("case", COUNT_CASES, ids=[_case_id(c) for c in COUNT_CASES])
def test_estimate_equals_real_count(case: tuple[str, dict[str, Any] | None]) -> None:
    name, cfg = case
    assert estimate_num_params(name, cfg) == _num_params(build_model(name, cfg))


@pytest.mark.parametrize("name,cfg,count", KNOWN_COUNTS)
def test_known_reference_counts(name: str, cfg: dict[str, Any], count: int) -> None:
    assert estimate_num_params(name, cfg) == count


def test_resnet18_torchvision_state_dict_names() -> None:
    model = build_model("resnet", {"depth": 18, "cifar_stem": False, "num_classes": 1000})
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == TORCHVISION_RESNET18
    assert (
        sum(
            math.prod(s)
            for k, s in TORCHVISION_RESNET18
            if "running" not in k and "tracked" not in k
        )
        == 11_689_512
    )
    # a torchvision-shaped state dict loads strictly
    sd = {
        k: torch.zeros(s, dtype=torch.long if k.endswith("tracked") else torch.float32)
        for k, s in TORCHVISION_RESNET18
    }
    model.load_state_dict(sd, strict=True)
    # torchvision's modules: 7x7 stride-2 stem, 3x3 stride-2 max-pool
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    # the CIFAR stem keeps every name; only conv1's kernel changes
    cifar = build_model("resnet", {"depth": 18, "num_classes": 1000}).state_dict()
    assert [k for k, _ in TORCHVISION_RESNET18] == list(cifar)
    assert tuple(cifar["conv1.weight"].shape) == (64, 3, 3, 3)


def test_reference_names_of_other_archs() -> None:
    vgg = build_model("vgg", {"depth": 11}).state_dict()
    assert tuple(vgg["features.0.weight"].shape) == (64, 3, 3, 3)
    assert "features.1.running_var" in vgg and tuple(vgg["classifier.weight"].shape) == (10, 512)
    pre = build_model("preact_resnet18", {"width": 8}).state_dict()
    for key in ("conv1.weight", "layer1.0.bn1.weight", "layer2.0.shortcut.0.weight", "linear.bias"):
        assert key in pre, key
    assert "bn.weight" not in pre
    wrn = build_model("wide_resnet", {"depth": 16, "widen_factor": 1}).state_dict()
    for key in (
        "conv1.weight",
        "block1.layer.0.bn1.weight",
        "block2.layer.0.convShortcut.weight",
        "block3.layer.1.conv2.weight",
        "bn1.running_mean",
        "fc.weight",
    ):
        assert key in wrn, key
    cifar_resnet = build_model("resnet", {"depth": 20}).state_dict()
    assert tuple(cifar_resnet["layer2.0.downsample.0.weight"].shape) == (32, 16, 1, 1)
    assert not any(k.startswith("layer4") for k in cifar_resnet)
    mlp = build_model("mlp", {"input_dim": 64, "widths": [8]}).state_dict()
    assert list(mlp) == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    lenet = build_model("lenet", {"in_channels": 1, "input_size": 28, "padding": "classic"})
    assert lenet.fc1.in_features == 16 * 5 * 5
    assert build_model("lenet", {"padding": "valid"}).fc1.in_features == 16 * 5 * 5
    nin = build_model("nin", {"depth": 2, "width": 8}).state_dict()
    assert tuple(nin["features.1.0.weight"].shape) == (8, 8, 3, 3)
    assert tuple(nin["classifier.weight"].shape) == (10, 8, 1, 1)


def test_init_is_deterministic_given_the_seed() -> None:
    for name in ARCH_NAMES:
        torch.manual_seed(123)
        a = build_model(name, SMALL_DIGITS[name]).state_dict()
        torch.manual_seed(123)
        b = build_model(name, SMALL_DIGITS[name]).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


# --------------------------------------------------------------------------------------------
# Export formats and torch.func
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_export_and_script(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, SMALL_DIGITS[name]).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), ref)
        scripted = torch.jit.script(model)
        torch.testing.assert_close(scripted(x), ref)


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_torch_func_jvp_vjp_hvp(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, SMALL_DIGITS[name]).eval()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = {k: b for k, b in model.named_buffers()}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        out = torch.func.functional_call(model, {**p, **buffers}, (x,))
        return nn.functional.cross_entropy(out, y)

    v = {k: torch.randn_like(p) for k, p in params.items()}
    value, directional = torch.func.jvp(loss, (params,), (v,))
    _, vjp_fn = torch.func.vjp(loss, params)
    (grads,) = vjp_fn(torch.ones(()))
    dot = sum((grads[k] * v[k]).sum() for k in params)
    torch.testing.assert_close(directional, dot, rtol=1e-4, atol=1e-5)
    _, hvp = torch.func.jvp(torch.func.grad(loss), (params,), (v,))
    assert set(hvp) == set(params)
    assert all(torch.isfinite(t).all() for t in hvp.values())
    assert torch.isfinite(value)


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------

BAD_CONFIGS: list[tuple[str, Any, str]] = [
    # (arch, config, text the message must contain: the offending key or name)
    ("alexnet", None, "alexnet"),
    ("resnet18", None, "'resnet' with"),
    ("mlp", {"widht": [4]}, "'widht'"),
    ("resnet", {"depth": 18, "dropout": 0.1}, "'dropout'"),
    ("mlp", {"in_channels": 1}, "'in_channels'"),
    ("mlp", {"widths": "256"}, "'widths'"),
    ("mlp", {"widths": [256, "x"]}, "'widths[1]'"),
    ("mlp", {"widths": [4.0]}, "'widths[0]'"),
    ("mlp", {"widths": [16, -4]}, "'widths[1]'"),
    ("mlp", {"widths": [10**7]}, "'widths[0]'"),
    ("mlp", {"widths": [4] * 5000}, "'widths'"),
    ("mlp", {"bias": 1}, "'bias'"),
    ("mlp", {"dropout": 1.0}, "'dropout'"),
    ("mlp", {"dropout": float("nan")}, "'dropout'"),
    ("mlp", {"activation": "swish"}, "'activation'"),
    ("mlp", {"num_classes": 0}, "'num_classes'"),
    ("mlp", {"num_classes": True}, "'num_classes'"),
    ("mlp", [1, 2], "JSON object"),
    ("lenet", {"input_size": 8, "padding": "valid"}, "'input_size'"),
    ("lenet", {"input_size": 3}, "'input_size'"),
    ("vgg", {"depth": 12}, "'depth'"),
    ("vgg", {"width_multiplier": 0}, "'width_multiplier'"),
    ("resnet", {"depth": 21}, "'depth'"),
    ("resnet", {"depth": "18"}, "'depth'"),
    ("resnet", {"depth": 18.0}, "'depth'"),
    ("resnet", {"width": -16}, "'width'"),
    ("resnet", {"depth": 20, "cifar_stem": False}, "'cifar_stem'"),
    ("preact_resnet18", {"width": 0}, "'width'"),
    ("wide_resnet", {"depth": 27}, "'depth'"),
    ("wide_resnet", {"widen_factor": 1000}, "'widen_factor'"),
    ("nin", {"kernel_size": 4}, "'kernel_size'"),
    ("nin", {"depth": 10**9}, "'depth'"),
    ("nin", {"width": -1}, "'width'"),
]


@pytest.mark.parametrize("name,cfg,needle", BAD_CONFIGS, ids=[repr(c)[:60] for c in BAD_CONFIGS])
def test_bad_configs_are_refused(name: str, cfg: Any, needle: str) -> None:
    with pytest.raises(BadArchitecture) as info:
        validate_config(name, cfg)
    assert needle in info.value.message
    assert info.value.code == "bad_architecture"
    with pytest.raises(BadArchitecture):
        build_model(name, cfg)
    with pytest.raises(BadArchitecture):
        estimate_num_params(name, cfg)


def test_bad_key_is_in_detail() -> None:
    with pytest.raises(BadArchitecture) as info:
        validate_config("resnet", {"depth": 21})
    assert info.value.detail["key"] == "depth"
    assert info.value.detail["value"] == 21
    assert info.value.to_dict()["code"] == "bad_architecture"


def test_non_string_name() -> None:
    with pytest.raises(BadArchitecture):
        validate_config(3, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name,cfg",
    [
        ("mlp", {"input_dim": 10_000_000, "widths": [100_000]}),  # 10^12 parameters
        ("mlp", {"input_dim": 100_000, "widths": [100_000] * 1000}),  # 10^13
        ("nin", {"width": 65_536, "depth": 64}),
        ("vgg", {"depth": 19, "width_multiplier": 64}),
        ("wide_resnet", {"depth": 1000, "widen_factor": 64}),
        ("resnet", {"depth": 110, "width": 4096}),
        ("lenet", {"input_size": 4096}),
    ],
)
def test_over_cap_refused_instantly_without_allocating(
    name: str, cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    estimate = estimate_num_params(name, cfg)
    assert estimate > MAX_PARAMS

    def no_modules(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a module was constructed")

    monkeypatch.setattr(nn.Module, "__init__", no_modules)
    start = time.perf_counter()
    with pytest.raises(BadArchitecture) as info:
        build_model(name, cfg)
    assert time.perf_counter() - start < 0.5
    assert "parameters" in info.value.message and f"{MAX_PARAMS:,}" in info.value.message
    assert info.value.detail["num_params"] == estimate
    assert info.value.detail["key"] in info.value.message


def test_largest_cap_compatible_config_is_accepted() -> None:
    # just under the cap: validated (not built)
    cfg = validate_config("mlp", {"input_dim": 4980, "widths": [100_000]})
    assert estimate_num_params("mlp", cfg) <= MAX_PARAMS
