"""The dashboard's static files: what each page loads, and how the page scripts use the core.

``static/app.js`` is the shared core: it defines the helpers every page needs and exports them
as ``window.GenScope``. Each page file (``dashboard.js``, ``upload.js``, ``run.js``,
``compare.js``) is an IIFE that takes ``window.GenScope`` as ``gs`` and aliases what it uses
(``var el = gs.el, fmt = gs.fmt;``). The checks here are by name, on the source text: no
JavaScript parser, so they rely on the files' plain layout (two-space indentation inside the
IIFE for the core's top-level definitions).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from frontend import pages

STATIC = Path(pages.__file__).parent / "static"
CORE = "app.js"
#: The static files each page loads, in order: the stylesheet, the core, then its own files.
PAGE_ASSETS: dict[str, list[str]] = {
    "runs": ["style.css", CORE, "dashboard.js", "upload.js"],
    "run": ["style.css", CORE, "run.js"],
    "compare": ["style.css", CORE, "compare.js"],
    "share": ["style.css", CORE, "compare.js"],
    "error": ["style.css", CORE],
}
PAGE_FILES = sorted({name for files in PAGE_ASSETS.values() for name in files[2:]})

#: Functions a page file may call without defining or aliasing them: the language's and the
#: browser's globals.
GLOBALS = frozenset(
    {
        "Array",
        "Boolean",
        "Error",
        "FormData",
        "JSON",
        "Number",
        "Object",
        "Promise",
        "String",
        "clearTimeout",
        "encodeURIComponent",
        "isFinite",
        "isNaN",
        "setTimeout",
    }
)
KEYWORDS = frozenset(
    {"catch", "for", "function", "if", "return", "switch", "typeof", "while", "with"}
)
#: Ways of turning a string into markup or code: user text must go in as text.
HTML_SINKS = (
    "innerHTML",
    "outerHTML",
    "insertAdjacentHTML",
    "document.write",
    "eval(",
    "new Function",
)

_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"' + r"|'(?:[^'\\\n]|\\.)*'")

RENDERERS: dict[str, Callable[[], str]] = {
    "runs": pages.render_dashboard,
    "run": lambda: pages.render_run_page("r1"),
    "compare": lambda: pages.render_compare_page("c1"),
    "share": lambda: pages.render_share_page({"title": "Shared"}),
    "error": lambda: pages.render_not_found("run", "no such run"),
}


def _source(name: str) -> str:
    """A static file's text without its comments (a rough cut: ``//`` only at a line's
    start or after a space, so URLs in strings stay)."""
    text = (STATIC / name).read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"(^|\s)//[^\n]*", r"\1", text)


def _code(text: str) -> str:
    """``text`` with its string literals emptied (words in messages are not names); the
    files' regular expressions hold no quotes."""
    return _STRING.sub('""', text)


def _static_refs(html: str) -> list[tuple[str, str]]:
    """``(file, query)`` for every ``/static/...`` URL a page's HTML references, in order."""
    return re.findall(r'(?:src|href)="/static/([^"?]+)(\?[^"]*)?"', html)


def _core_exports() -> set[str]:
    """The names the core puts on ``window.GenScope``."""
    block = re.search(r"window\.GenScope = Object\.freeze\(\{(.*?)\}\);", _source(CORE), re.S)
    assert block is not None, "app.js does not export window.GenScope"
    return set(re.findall(r"([\w$]+):\s*[\w$]+,?", block.group(1)))


def _top_level_definitions(text: str) -> set[str]:
    """Functions and variables defined at the top of a file's IIFE (two-space indent)."""
    names = set(re.findall(r"^  function ([\w$]+)\s*\(", text, re.M))
    for declaration in re.findall(r"^  var ([^;]+);", text, re.M):
        names.update(re.findall(r"(?:^|,)\s*([\w$]+)\s*=", declaration))
    return names


def _aliases(text: str) -> dict[str, str]:
    """``local name → core export`` for a page file's ``var x = gs.y`` aliases."""
    return dict(re.findall(r"([\w$]+)\s*=\s*gs\.([\w$]+)", text))


def _page_definitions(text: str) -> set[str]:
    """What a page file defines itself, at any depth: functions and variables (not aliases)."""
    code = _code(text)
    names = set(re.findall(r"\bfunction ([\w$]+)\s*\(", code))
    names.update(re.findall(r"\b(?:var|let|const) ([\w$]+)\s*=(?!\s*gs\.)", code))
    return names


def _bare_calls(text: str) -> set[str]:
    """Names called as ``name(`` (not as a method ``x.name(``)."""
    return set(re.findall(r"(?<![\w$.])([A-Za-z_$][\w$]*)\s*\(", _code(text))) - KEYWORDS


# --------------------------------------------------------------------------- pages


@pytest.mark.parametrize("page", sorted(PAGE_ASSETS))
def test_page_loads_existing_static_files_with_the_version(page: str) -> None:
    refs = _static_refs(RENDERERS[page]())
    assert [name for name, _ in refs] == PAGE_ASSETS[page]
    for name, query in refs:
        assert (STATIC / name).is_file(), f"{page} references a missing file: /static/{name}"
        assert query == f"?v={pages.STATIC_VERSION}", f"{page}: /static/{name} is not versioned"


def test_every_static_file_is_used_by_a_page() -> None:
    used = {name for files in PAGE_ASSETS.values() for name in files}
    present = {p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file()}
    assert present == used


def test_static_version_changes_with_every_static_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(STATIC, tmp_path / "static")
    monkeypatch.setattr(pages, "HERE", tmp_path)
    assert pages._static_version() == pages.STATIC_VERSION
    files = sorted(p for p in (tmp_path / "static").rglob("*") if p.is_file())
    seen = {pages.STATIC_VERSION}
    for path in files:
        path.write_bytes(path.read_bytes() + b"\n")
        seen.add(pages._static_version())
    assert len(seen) == 1 + len(files)


# --------------------------------------------------------------------------- scripts


def test_core_exports_only_what_it_defines() -> None:
    exports = _core_exports()
    assert exports, "the core exports nothing"
    missing = exports - _top_level_definitions(_source(CORE))
    assert not missing, f"app.js exports names it does not define: {sorted(missing)}"


@pytest.mark.parametrize("name", PAGE_FILES)
def test_page_file_calls_only_core_exports_or_its_own_functions(name: str) -> None:
    text = _source(name)
    exports = _core_exports()
    aliases = _aliases(text)
    assert aliases, f"{name} uses nothing of the core"
    used = set(aliases.values()) | set(re.findall(r"\bgs\.([\w$]+)", text))
    unknown = used - exports
    assert not unknown, f"{name} reads names the core does not export: {sorted(unknown)}"
    renamed = {local: core for local, core in aliases.items() if local != core}
    assert not renamed, f"{name} renames core helpers: {renamed}"
    undefined = _bare_calls(text) - _page_definitions(text) - set(aliases) - GLOBALS
    assert not undefined, f"{name} calls functions defined nowhere it can see: {sorted(undefined)}"


@pytest.mark.parametrize("name", PAGE_FILES)
def test_page_file_defines_nothing_the_core_defines(name: str) -> None:
    clash = _page_definitions(_source(name)) & _top_level_definitions(_source(CORE))
    assert not clash, f"{name} redefines the core's {sorted(clash)}: use the core's"


@pytest.mark.parametrize("name", [CORE, *PAGE_FILES])
def test_script_inserts_text_only(name: str) -> None:
    text = (STATIC / name).read_text()
    for sink in HTML_SINKS:
        assert sink not in text, f"{name} uses {sink}"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("name", [CORE, *PAGE_FILES])
def test_script_parses(name: str) -> None:
    node = shutil.which("node")
    assert node is not None
    check = subprocess.run(
        [node, "--check", str(STATIC / name)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
