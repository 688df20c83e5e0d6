"""The checkpoint format registry (genscope.io.formats): a format is one record, detection and
loading go through the registry, and every list of formats users see is generated from it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genscope.errors import BadCheckpoint, UnsafeCheckpoint
from genscope.io.checkpoints import LoadedModel, detect_format, load_checkpoint
from genscope.io.formats import (
    FORMAT_EXPORT,
    FORMAT_SAFETENSORS,
    FORMAT_STATE_DICT,
    FORMAT_TORCHSCRIPT,
    CheckpointFormat,
    Contents,
    Probe,
    accepted_formats,
    accepted_suffixes,
    checkpoint_formats,
    describe_formats,
    format_named,
    formats_markdown,
    register_format,
    suffix_summary,
    unregister_format,
)
from genscope.io.zoo import build_model
from tests.engine.helpers import export_pt2, save_safetensors, save_state_dict, script_pt

REPO = Path(__file__).resolve().parents[2]
MLP = {"input_dim": 4, "widths": [3], "num_classes": 2}

# --- a toy format: JSON weights, registered by the tests below only ---------------------------

TOY_MAGIC = b'{"toy-weights":'


def _is_toy(probe: Probe) -> bool:
    return probe.members is None and probe.head.startswith(TOY_MAGIC)


def _read_toy(path: Path) -> Contents:
    """``{"toy-weights": 1, "tensors": {name: nested lists}}`` as float32 tensors."""
    document = json.loads(path.read_text())
    tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in document["tensors"].items()}
    return Contents(tensors=tensors, notes=["read JSON weights"])


TOY = CheckpointFormat(
    name="toy-json",
    title="JSON weights",
    suffixes=(".jsonw",),
    noun="a .jsonw file",
    description="Weights as nested JSON lists, loaded into the zoo architecture named with --arch.",
    form="state_dict",
    detect=_is_toy,
    loader=_read_toy,
    needs_arch=True,
)


@pytest.fixture()
def toy_format() -> Iterator[CheckpointFormat]:
    """The toy format, registered for one test and removed after it."""
    register_format(TOY)
    try:
        yield TOY
    finally:
        unregister_format(TOY.name)


def _toy_file(path: Path, model: torch.nn.Module) -> Path:
    tensors = {k: v.tolist() for k, v in model.state_dict().items()}
    path.write_text(json.dumps({"toy-weights": 1, "tensors": tensors}))
    return path


def test_a_registered_format_is_detected_loaded_and_listed(
    toy_format: CheckpointFormat, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", MLP).eval()
    path = _toy_file(tmp_path / "w.jsonw", model)

    assert detect_format(path) == "toy-json"
    loaded = load_checkpoint(path, arch="mlp", arch_config=MLP)
    assert (loaded.format, loaded.form, loaded.arch) == ("toy-json", "state_dict", "mlp")
    assert loaded.unwrapped == ["read JSON weights"]
    x = torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x))
    with pytest.raises(BadCheckpoint, match="holds weights only: name the architecture"):
        load_checkpoint(path)

    assert checkpoint_formats()[-1] is toy_format and format_named("toy-json") is toy_format
    assert ".jsonw" in accepted_suffixes()
    assert suffix_summary().endswith(", .jsonw")
    assert describe_formats()[-1]["name"] == "toy-json"
    assert "| JSON weights (`toy-json`) | `.jsonw` | yes | `state_dict` |" in formats_markdown()
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    with pytest.raises(BadCheckpoint, match=r"a torch.save state dict or a \.jsonw file\)"):
        load_checkpoint(unknown)


def test_after_unregistering_the_format_is_unknown(tmp_path: Path) -> None:
    register_format(TOY)
    unregister_format(TOY.name)
    path = _toy_file(tmp_path / "w.jsonw", build_model("mlp", MLP))
    with pytest.raises(BadCheckpoint, match="not a checkpoint GenScope can read"):
        detect_format(path)
    assert format_named("toy-json") is None and ".jsonw" not in accepted_suffixes()


def test_a_refused_format_is_a_record_with_its_message(tmp_path: Path) -> None:
    refused = CheckpointFormat(
        name="toy-program",
        title="toy program",
        suffixes=(".toyp",),
        noun="a toy program",
        description="Recognised and refused.",
        form="module",
        detect=lambda probe: probe.head.startswith(b"#!toy"),
        refusal="{name} is a toy program; refused",
    )
    register_format(refused, before=FORMAT_SAFETENSORS)
    try:
        names = [f.name for f in checkpoint_formats()]
        assert names.index("toy-program") == names.index(FORMAT_SAFETENSORS) - 1
        path = tmp_path / "p.toyp"
        path.write_bytes(b"#!toy run()")
        with pytest.raises(UnsafeCheckpoint, match=r"^p\.toyp is a toy program; refused$") as err:
            load_checkpoint(path)
        assert err.value.detail == {"format": "toy-program"}
        assert refused not in accepted_formats() and ".toyp" not in suffix_summary()
    finally:
        unregister_format("toy-program")


def test_the_registry_refuses_inconsistent_records() -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_format(format_named(FORMAT_EXPORT))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no checkpoint format named 'nope'"):
        unregister_format("nope")
    with pytest.raises(ValueError, match="form must be one of"):
        CheckpointFormat("x", "x", (".x",), "an x", "x", "graph", _is_toy, loader=_read_toy)
    with pytest.raises(ValueError, match="suffixes"):
        CheckpointFormat("x", "x", ("x",), "an x", "x", "module", _is_toy, loader=_read_toy)
    with pytest.raises(ValueError, match="either a loader or a refusal"):
        CheckpointFormat("x", "x", (".x",), "an x", "x", "module", _is_toy)


# --- the built-in formats through the registry --------------------------------------------------


def test_built_in_formats_detect_load_and_map_to_forms(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", MLP).eval()
    x = torch.randn(2, 4)
    files = {
        FORMAT_EXPORT: export_pt2(model, x, tmp_path / "m.pt2"),
        FORMAT_SAFETENSORS: save_safetensors(model, tmp_path / "w.safetensors"),
        FORMAT_STATE_DICT: save_state_dict(model, tmp_path / "w.pt"),
        FORMAT_TORCHSCRIPT: script_pt(model, tmp_path / "s.pt"),
    }
    forms = {FORMAT_EXPORT: "program", FORMAT_SAFETENSORS: "state_dict"}
    forms |= {FORMAT_STATE_DICT: "state_dict", FORMAT_TORCHSCRIPT: "module"}
    for name, path in files.items():
        assert detect_format(path) == name
        record = format_named(name)
        assert record is not None and record.form == forms[name]
        assert path.suffix in record.suffixes
        if record.accepted:
            arch = "mlp" if record.needs_arch else None
            loaded = load_checkpoint(path, arch=arch, arch_config=MLP)
            assert (loaded.format, loaded.form) == (name, forms[name])
    # modules handed over in Python: forms without a file format
    assert LoadedModel(model, "module", "x").form == "module"
    scripted = LoadedModel(torch.jit.script(model), FORMAT_TORCHSCRIPT, "y")
    assert scripted.form == "module" and not scripted.functional
    assert LoadedModel(model, FORMAT_SAFETENSORS, "z").functional


def test_the_format_names_need_no_torch(tmp_path: Path) -> None:
    """The service lists and detects formats in its own process, which never imports torch."""
    model = build_model("mlp", MLP)
    path = save_safetensors(model, tmp_path / "w.safetensors")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        from genscope.io.formats import describe_formats, detect, suffix_summary
        assert suffix_summary() == ".pt2, .safetensors, .pt/.pth/.bin"
        assert [f["name"] for f in describe_formats()][0] == "torch.export"
        print(detect({str(path)!r}).name)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "safetensors", done.stderr


# --- every list users see agrees with the registry ----------------------------------------------


def test_the_cli_help_names_the_registered_formats() -> None:
    import typer.main

    from genscope.cli import app

    command = typer.main.get_command(app)
    analyze = command.commands["analyze"]  # type: ignore[attr-defined]
    checkpoint = next(p for p in analyze.params if p.name == "checkpoint")
    assert suffix_summary() in checkpoint.help


def test_the_api_upload_describes_the_registered_formats() -> None:
    pytest.importorskip("fastapi")
    from backend.api.routes.checkpoints import router

    upload = next(r for r in router.routes if "POST" in getattr(r, "methods", ()))
    assert upload.summary == f"Upload a checkpoint ({suffix_summary()})"
    schema = upload.openapi_extra["requestBody"]["content"]["multipart/form-data"]["schema"]
    description = schema["properties"]["file"]["description"]
    for fmt in accepted_formats():
        assert fmt.title in description and all(s in description for s in fmt.suffixes)


def test_the_docs_list_is_the_registry() -> None:
    page = (REPO / "docs" / "formats.md").read_text()
    assert formats_markdown() in page, "regenerate the table in docs/formats.md"
