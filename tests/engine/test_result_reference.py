"""``docs/results.md`` is the page :mod:`genscope.measures.reference` writes from the measures'
declared result schemas: every key of every result (bound terms included) is documented, and the
page cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from genscope.measures.reference import current_page
from genscope.measures.registry import all_measures

PAGE = Path(__file__).resolve().parents[2] / "docs" / "results.md"


def test_the_committed_page_is_the_generated_one() -> None:
    assert PAGE.read_text(encoding="utf-8") == current_page(), (
        "docs/results.md is stale: python -m genscope.measures.reference > docs/results.md"
    )


def test_every_measure_and_bound_term_is_on_the_page() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for m in all_measures():
        assert f"### `{m.id}`" in page
    for term in ("terms.gamma", "terms.log_width_term", "terms.confidence_term"):
        assert f"| `{term}` |" in page
