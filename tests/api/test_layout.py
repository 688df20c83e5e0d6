"""One test module per route module: every ``backend/api/routes/<route>.py`` has its
``tests/api/test_<route>.py``, every test there requests an endpoint of that route, and every
endpoint of the route (method and path) is requested there.

Requests are read from the tests' source: a call ``<x>.get/post/put/patch/delete(path, ...)``
whose path is a string, an f-string or a sum of strings (what is computed stands for one path
segment), directly or through a helper function of the test module or of a ``conftest.py``
(``upload_checkpoint`` posts to ``/api/checkpoints``).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parents[1]
ROUTES_DIR = ROOT / "backend" / "api" / "routes"
HELPER_SOURCES = (ROOT / "tests" / "conftest.py", TESTS_DIR / "conftest.py")
HTTP_METHODS = frozenset({"get", "post", "put", "patch", "delete"})
#: Stands for a computed part of a requested path (an f-string's field, a computed summand).
COMPUTED = "\0"

Request = tuple[str, str]  # (method, path), e.g. ("get", "/api/runs/\0")


def route_modules() -> list[str]:
    """The route modules' names (``runs`` for ``backend/api/routes/runs.py``)."""
    return sorted(p.stem for p in ROUTES_DIR.glob("*.py") if p.stem != "__init__")


def endpoints(route: str) -> dict[Request, re.Pattern[str]]:
    """Each endpoint of a route module as (method, path template), with a pattern that matches
    the paths it answers (a ``{parameter}`` is one path segment)."""
    from backend.api.routes import api_router

    module = importlib.import_module(f"backend.api.routes.{route}")
    found: dict[Request, re.Pattern[str]] = {}
    for api_route in module.router.routes:
        template = api_router.prefix + api_route.path
        pieces = re.split(r"\{[^}]+\}", template)
        pattern = re.compile("[^/]+".join(re.escape(piece) for piece in pieces))
        for method in api_route.methods:
            found[(method.lower(), template)] = pattern
    return found


def _path_text(node: ast.expr) -> str | None:
    """The path an expression spells, with :data:`COMPUTED` for what is computed; None when no
    part of it is a literal string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else COMPUTED for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _path_text(node.left), _path_text(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else COMPUTED) + (right if right is not None else COMPUTED)
    return None


def _direct_requests(node: ast.AST) -> tuple[set[Request], set[str]]:
    """The requests a piece of code makes itself, and the names of the functions it calls."""
    requests: set[Request] = set()
    called: set[str] = set()
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        if isinstance(call.func, ast.Name):
            called.add(call.func.id)
        elif isinstance(call.func, ast.Attribute) and call.func.attr in HTTP_METHODS and call.args:
            path = _path_text(call.args[0])
            if path is not None and path.startswith("/"):
                requests.add((call.func.attr, path.split("?", 1)[0]))
    return requests, called


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _helper_requests(helpers: dict[str, ast.FunctionDef]) -> dict[str, set[Request]]:
    """What each helper function requests, through the helpers it calls too."""
    direct = {name: _direct_requests(fn) for name, fn in helpers.items()}
    total = {name: set(requests) for name, (requests, _) in direct.items()}
    changed = True
    while changed:
        changed = False
        for name, (_, called) in direct.items():
            for other in called & total.keys():
                if not total[other] <= total[name]:
                    total[name] |= total[other]
                    changed = True
    return total


def requests_per_test(source: str, helper_sources: list[str]) -> dict[str, set[Request]]:
    """The requests each test function (``test_*``, also in ``Test*`` classes) of a module
    makes, directly or through the module's and the helper sources' functions."""
    tree = ast.parse(source)
    helpers: dict[str, ast.FunctionDef] = {}
    for text in helper_sources:
        helpers.update(_functions(ast.parse(text)))
    helpers.update(_functions(tree))
    through = _helper_requests(helpers)
    tests: list[ast.FunctionDef] = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.startswith("Test")):
        tests += [
            n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
        ]
    out: dict[str, set[Request]] = {}
    for test in tests:
        requests, called = _direct_requests(test)
        for name in called & through.keys():
            requests |= through[name]
        out[test.name] = requests
    return out


def _answered(request: Request, route_endpoints: dict[Request, re.Pattern[str]]) -> set[Request]:
    method, path = request
    return {
        endpoint
        for endpoint, pattern in route_endpoints.items()
        if endpoint[0] == method and pattern.fullmatch(path)
    }


def test_requests_are_read_through_strings_fstrings_sums_and_helpers() -> None:
    helper = 'def upload(client):\n    return client.post("/api/checkpoints", files={})\n'
    source = (
        "def _shared(client, token):\n"
        "    return client.get('/api/share/' + token)\n"
        "def test_one(client, body):\n"
        "    upload(client)\n"
        "    client.get(f\"/api/runs/{body['id']}\", params={'report': False})\n"
        "    client.delete(f'/api/comparisons/{body[\"id\"]}/share')\n"
        "    _shared(client, 'x' * 43)\n"
        "    client.get('/api/runs?limit=2')\n"
        "    {}.get('status')\n"
        "class TestTwo:\n"
        "    def test_two(self, client):\n"
        "        client.get('/api/health')\n"
    )
    assert requests_per_test(source, [helper]) == {
        "test_one": {
            ("post", "/api/checkpoints"),
            ("get", f"/api/runs/{COMPUTED}"),
            ("delete", f"/api/comparisons/{COMPUTED}/share"),
            ("get", f"/api/share/{COMPUTED}"),
            ("get", "/api/runs"),
        },
        "test_two": {("get", "/api/health")},
    }
    runs = endpoints("runs")
    assert _answered(("get", f"/api/runs/{COMPUTED}"), runs) == {("get", "/api/runs/{run_id}")}
    assert _answered(("get", "/api/runs"), runs) == {("get", "/api/runs")}
    assert _answered(("delete", "/api/runs"), runs) == set()


@pytest.mark.parametrize("route", route_modules())
def test_each_route_module_has_a_test_module_that_requests_its_endpoints(route: str) -> None:
    test_module = TESTS_DIR / f"test_{route}.py"
    assert test_module.is_file(), (
        f"backend/api/routes/{route}.py has no tests/api/{test_module.name}"
    )
    route_endpoints = endpoints(route)
    helpers = [p.read_text() for p in HELPER_SOURCES if p.is_file()]
    per_test = requests_per_test(test_module.read_text(), helpers)
    assert per_test, f"{test_module.name} holds no test"
    requested: set[Request] = set()
    elsewhere = []
    for name, requests in per_test.items():
        mine = set().union(*(_answered(r, route_endpoints) for r in requests))
        if not mine:
            elsewhere.append(name)
        requested |= mine
    assert not elsewhere, f"tests of {test_module.name} that request no endpoint of {route}.py"
    untested = sorted(set(route_endpoints) - requested)
    assert not untested, f"endpoints of {route}.py that {test_module.name} never requests"
