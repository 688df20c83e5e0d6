"""The measure registry: groups, typed parameters, CLI assignments."""

from __future__ import annotations

import pytest

from genscope.errors import BadParameter, UnknownMeasure
from genscope.measures.registry import (
    GROUPS,
    Param,
    all_measures,
    parse_param_assignments,
    resolve_measures,
    resolve_params,
)


def test_every_measure_is_well_formed() -> None:
    measures = all_measures()
    assert "margin.output" in {m.id for m in measures}
    for m in measures:
        assert m.group in GROUPS
        assert m.direction in (None, "higher_is_better", "lower_is_better")
        assert m.description, f"{m.id} has no description (docstring)"
        for p in m.params:
            assert p.coerce(p.default, m.id) == p.default or p.default is None


def test_groups_and_all_expand() -> None:
    ids = [m.id for m in resolve_measures("margins")]
    assert "margin.output" in ids and all(i.startswith("margin.") for i in ids)
    assert {m.id for m in resolve_measures(["all"])} == {m.id for m in all_measures()}
    assert [m.id for m in resolve_measures(None)] == ["margin.output"]
    assert [m.id for m in resolve_measures("margin.output,margin.output")] == ["margin.output"]


def test_unknown_measure_is_named() -> None:
    with pytest.raises(UnknownMeasure, match="margin.outptu"):
        resolve_measures(["margin.outptu"])


def test_param_coercion_and_ranges() -> None:
    k = Param("k", int, 5, min=1, max=100)
    assert k.coerce("7") == 7 and k.coerce(7.0) == 7
    with pytest.raises(BadParameter, match=">= 1"):
        k.coerce("0", "hessian.top_eigenvalues")
    with pytest.raises(BadParameter, match="must be a int"):
        k.coerce("2.5")
    with pytest.raises(BadParameter, match="must be a int"):
        k.coerce(True)
    rho = Param("rho", float, 0.05, min=0.0)
    assert rho.coerce("1e-3") == pytest.approx(1e-3)
    with pytest.raises(BadParameter, match="finite"):
        rho.coerce("nan")
    flag = Param("flag", bool, False)
    assert flag.coerce("yes") is True and flag.coerce("0") is False
    choice = Param("norm", str, "l2", choices=("l2", "linf"))
    with pytest.raises(BadParameter, match="one of l2, linf"):
        choice.coerce("l1")


def test_cli_assignments() -> None:
    parsed = parse_param_assignments(["hessian.top_eigenvalues.k=10", "sharpness.sam.rho = 0.1"])
    assert parsed == {"hessian.top_eigenvalues": {"k": "10"}, "sharpness.sam": {"rho": "0.1"}}
    for bad in ["k=10", "hessian.top_eigenvalues.k", "=3"]:
        with pytest.raises(BadParameter, match="MEASURE.NAME=VALUE"):
            parse_param_assignments([bad])


def test_params_for_unselected_or_unknown_names_are_errors() -> None:
    chosen = resolve_measures(["margin.output"])
    with pytest.raises(BadParameter, match="not among the selected"):
        resolve_params([], {"margin.output": {}})
    with pytest.raises(UnknownMeasure):
        resolve_params(chosen, {"nope.nothing": {"a": 1}})
    with pytest.raises(BadParameter, match="has no parameter 'zzz'"):
        resolve_params(chosen, {"margin.output": {"zzz": 1}})
