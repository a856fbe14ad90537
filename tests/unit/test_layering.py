"""What ships imports only what ships: services/common imports no service, and nothing under
services/ imports the development tools (devstack, bench, tools, tests)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "services"
DEVELOPMENT_PACKAGES = ("devstack", "bench", "tools", "tests")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def offending_imports(root: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(REPO)} imports {module}"
        for path in root.rglob("*.py")
        for module in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    )


def test_the_shared_runtime_imports_no_service() -> None:
    services = tuple(
        f"services.{p.name}" for p in SERVICES.iterdir() if p.is_dir() and p.name != "common"
        and (p / "__init__.py").exists()
    )
    assert "services.order" in services
    assert offending_imports(SERVICES / "common", services) == []


def test_nothing_that_ships_imports_a_development_tool() -> None:
    assert offending_imports(SERVICES, DEVELOPMENT_PACKAGES) == []


def test_the_check_sees_an_offending_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from devstack.run import start_everything\nimport services.order.app\n")
    assert imported_modules(module) == {"devstack.run", "services.order.app"}
