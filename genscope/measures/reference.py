"""The result reference (``docs/results.md``): every measure's result keys, written from the
schemas the measures declare (:mod:`genscope.measures.schema`), so that every key a report holds
— bound terms such as ``gamma`` or ``log_width_term`` included — is explained in the repository
and the page cannot drift from the code.

``python -m genscope.measures.reference > docs/results.md`` rewrites the page; the test suite
checks that the committed page is what this module writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

HEADER = """# Result reference

Every key of every measure's result in a report (schema `genscope.report/1`, see
[report.md](report.md)), as the measures declare it. This page is generated from the
declarations (`python -m genscope.measures.reference > docs/results.md`); definitions and
conventions are in [measures.md](measures.md).

A key's kind is its JSON kind; any key may be `null` (a missing value, with a `reason`). Arrays
say what they are indexed by (`per example`, `per layer`, ...); per-example arrays name the key
holding the examples' labels.
"""


def _cell(text: Any) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _rows(details: Sequence[Mapping[str, Any]], prefix: str = "") -> Iterable[str]:
    for d in details:
        name = f"{prefix}{d['name']}"
        kind = d["kind"]
        if d.get("per"):
            kind += f", per {d['per']}"
        if d.get("labels"):
            kind += f", labels in `{prefix}{d['labels']}`"
        yield f"| `{name}` | {_cell(kind)} | {_cell(d.get('help', ''))} |"
        fields = d.get("fields") or ()
        if fields:
            inner = f"{name}[]." if d["kind"] == "array" else f"{name}."
            yield from _rows(fields, inner)


def _table(details: Sequence[Mapping[str, Any]]) -> list[str]:
    if not details:
        return ["No keys beside `value`."]
    return ["| key | kind | meaning |", "| --- | --- | --- |", *_rows(details)]


def render(measures: Sequence[Mapping[str, Any]], common: Sequence[Mapping[str, Any]]) -> str:
    """The page for the measures' ``describe()`` dicts and the keys common to every result.

    >>> page = render(
    ...     [{"id": "m.x", "description": "d", "source": "s", "group": "g", "direction": None,
    ...       "result": [{"name": "gamma", "kind": "number", "help": "γ"}]}],
    ...     [{"name": "reason", "kind": "string", "help": "why"}])
    >>> "| `gamma` | number | γ |" in page and "### `m.x`" in page
    True
    """
    lines = [HEADER, "## Keys of every result", ""]
    lines += [
        "| key | kind | meaning |",
        "| --- | --- | --- |",
        "| `value` | number | the headline value (null with a `reason` when there is none) |",
        "| `params` | object | the parameters used, defaults filled in |",
        "| `seconds` | number | wall time of the measure |",
        "| `status` | string | `ok`, `failed` (with `error`) or `skipped` (with `reason`) |",
        "| `error` | object | `code` and `message` of a failed measure |",
        "| `direction` | string | `higher_is_better` or `lower_is_better` for generalization |",
        *_rows(common),
        "",
    ]
    by_group: dict[str, list[Mapping[str, Any]]] = {}
    for m in measures:
        by_group.setdefault(str(m.get("group") or "other"), []).append(m)
    for group in sorted(by_group):
        lines += [f"## {group.capitalize()}", ""]
        for m in sorted(by_group[group], key=lambda item: item["id"]):
            lines += [f"### `{m['id']}`", "", _cell(m.get("description", ""))]
            if m.get("source"):
                lines += ["", f"Source: {_cell(m['source'])}."]
            if m.get("direction"):
                lines += ["", f"Direction: `{m['direction']}`."]
            lines += ["", *_table(m.get("result") or []), ""]
    return "\n".join(lines).rstrip() + "\n"


def current_page() -> str:
    """The page for the registered measures."""
    from genscope.measures.registry import all_measures
    from genscope.measures.schema import COMMON

    return render([m.describe() for m in all_measures()], [d.describe() for d in COMMON])


if __name__ == "__main__":  # pragma: no cover - the page's writer
    print(current_page(), end="")
