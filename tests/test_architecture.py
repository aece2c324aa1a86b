"""The package's imports follow the house rules (ARCHITECTURE.md): no cycles, no arrows up.

Every import counts, at module level or inside a function, except those under
``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mediagate

PACKAGE = Path(mediagate.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
        for inner in ast.walk(node)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
            if not node.level:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in known else target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and every module it imports (any library)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {name: _imports(path, name, known) - {name} for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    inside = {name: {dep for dep in deps if dep in graph} for name, deps in graph.items()}
    cycles, state = [], dict.fromkeys(inside, 0)  # 0 new, 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(inside[node]):
            if state[dep] == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif state[dep] == 0:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(inside):
        if state[node] == 0:
            visit(node, [node])
    return cycles


def _reaches(graph: dict[str, set[str]], start: str, banned: tuple[str, ...]) -> list[str]:
    """The modules of ``banned`` that ``start`` imports, directly or through the package."""
    seen, todo, hits = {start}, [start], []
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep.startswith(banned) or dep.split(".")[0] in banned:
                hits.append(dep)
            elif dep in graph and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return sorted(set(hits))


def test_there_are_no_import_cycles() -> None:
    assert _cycles(import_graph()) == []


def test_decoders_never_import_the_network_cache_connector_or_cli() -> None:
    graph = import_graph()
    banned = (
        "mediagate._fetch",
        "mediagate._cache",
        "mediagate._connector",
        "mediagate._cli",
        "mediagate._demo",
        "mediagate._present",
        "aiohttp",
        "yarl",
        "socket",
        "urllib.request",
        "http",
    )
    offenders = {
        name: _reaches(graph, name, banned)
        for name in graph
        if name.startswith("mediagate._media") and _reaches(graph, name, banned)
    }
    assert offenders == {}


def test_the_rules_do_no_io() -> None:
    graph = import_graph()
    io_modules = (
        "mediagate._fetch",
        "mediagate._cache",
        "mediagate._local",
        "mediagate._config",
        "aiohttp",
        "socket",
        "sqlite3",
        "http",
        "urllib.request",
        "subprocess",
    )
    for rules in ("mediagate._policy", "mediagate._urls"):
        direct = {dep for dep in graph[rules] if dep.startswith(io_modules)}
        # MediaPolicy.from_env reads settings through the one reader of the environment.
        assert direct <= {"mediagate._config"}, rules
        assert _reaches({**graph, "mediagate._config": set()}, rules, io_modules) in (
            [],
            ["mediagate._config"],
        ), rules


def test_the_graph_sees_lazy_imports() -> None:
    # A function-level import is an arrow too: the CLI's lazy import of the demo counts.
    assert "mediagate._demo" in import_graph()["mediagate._cli"]


def _importers(graph: dict[str, set[str]], module: str) -> set[str]:
    return {name for name, deps in graph.items() if module in deps}


def test_only_the_demo_imports_the_loopback_server_and_the_media_builders() -> None:
    # Both serve the demo, the tests and the benchmarks, never a load; neither depends on
    # the rest of the package.
    graph = import_graph()
    for module in ("mediagate._loopback", "mediagate._build"):
        assert _importers(graph, module) == {"mediagate._demo"}, module
        assert not {dep for dep in graph[module] if dep.startswith("mediagate")}, module


def test_importing_the_package_loads_no_test_support_module() -> None:
    code = (
        "import sys, mediagate\n"
        "assert 'mediagate._loopback' not in sys.modules\n"
        "assert 'mediagate._build' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_batch_loading_imports_pyarrow_and_ray_only_when_used() -> None:
    # The batch core builds Arrow tables on demand; the package never pulls either in.
    code = (
        "import sys, mediagate, mediagate._batch\n"
        "assert 'pyarrow' not in sys.modules, 'pyarrow'\n"
        "assert 'ray' not in sys.modules, 'ray'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_the_fetcher_opens_client_connections_and_only_the_proxy_serves() -> None:
    # aiohttp's client lives in _fetch (media fetches and the proxy's one upstream); the
    # proxy imports only its server half.
    graph = import_graph()
    users = {name for name, deps in graph.items() if any(d.startswith("aiohttp") for d in deps)}
    assert {name for name in users if not name.startswith("mediagate._fetch")} == {
        "mediagate._proxy"
    }
    proxy = (PACKAGE / "_proxy.py").read_text()
    assert "from aiohttp import web\n" in proxy and "Client" not in proxy


def test_metrics_import_prometheus_only_when_enabled() -> None:
    # prometheus_client is the optional mediagate[metrics] extra: only the metrics module
    # imports it, inside its functions, and the package never pulls it in.
    graph = import_graph()
    users = {name for name, deps in graph.items() if "prometheus_client" in deps}
    assert users == {"mediagate._metrics"}
    code = "import sys, mediagate\nassert 'prometheus_client' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)
