"""The domain packages do not import the transport: only ``protocols/`` (the routes, the
HTTP and gRPC servers), the composition root ``server.py`` and the CLI may import
``ferry.protocols``. Read from the source with ``ast``, imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import ferry

SRC = Path(ferry.__file__).parent
TRANSPORT = {"protocols", "cli", "server.py"}
"""Top-level parts of ``ferry`` allowed to import ``ferry.protocols``."""


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_domain_packages_do_not_import_the_transport():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        part = path.relative_to(SRC).parts[0]
        if part in TRANSPORT:
            continue
        for name in imported_modules(path):
            if name == "ferry.protocols" or name.startswith("ferry.protocols."):
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from ferry.protocols.router import Router\n")
    assert "ferry.protocols.router" in imported_modules(sample)
