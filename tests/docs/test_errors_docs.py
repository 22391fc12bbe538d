"""docs/errors.md lists every ``FerryError`` subclass with the HTTP and gRPC status the
protocols answer it with, as the classes and ``protocols/grpc.py`` say."""

from __future__ import annotations

import inspect
import re

import ferry.errors
from ferry.errors import FerryError
from ferry.protocols.grpc import status_code
from tests.conftest import ROOT
from tests.docs._markdown import table_rows

PAGE = (ROOT / "docs" / "errors.md").read_text()


def error_classes() -> dict[str, type[FerryError]]:
    return {name: cls for name, cls in inspect.getmembers(ferry.errors, inspect.isclass)
            if issubclass(cls, FerryError) and cls.__module__ == ferry.errors.__name__}


def _documented() -> dict[str, tuple[str, str]]:
    rows = table_rows(PAGE, "class")
    return {row[0].strip("`"): (row[1], row[2].strip("`")) for row in rows}


def test_every_error_class_is_in_the_table_with_its_statuses():
    documented = _documented()
    wrong = []
    for name, cls in error_classes().items():
        if name not in documented:
            wrong.append(f"{name}: no row (http {cls.http_status}, "
                         f"gRPC {status_code(cls('x')).name})")
            continue
        http, grpc_code = documented[name]
        shown = re.match(r"\d+", http)
        if not shown or int(shown.group()) != cls.http_status:
            wrong.append(f"{name}: HTTP status shown {http!r}, the class says {cls.http_status}")
        if grpc_code != status_code(cls("x")).name:
            wrong.append(f"{name}: gRPC status shown {grpc_code!r}, protocols/grpc.py answers "
                         f"{status_code(cls('x')).name}")
    for name in documented.keys() - error_classes().keys():
        wrong.append(f"{name}: in the table but not a class in ferry.errors")
    assert not wrong, "docs/errors.md 'Every error class' table:\n" + "\n".join(wrong)


def test_every_error_class_is_in_the_tree_with_its_status():
    tree = re.search(r"## The tree\n+```\n(.*?)```", PAGE, re.S)
    assert tree, "docs/errors.md has no '## The tree' block"
    shown = dict(re.findall(r"(\w+)(?: \((\d+)\))?", tree.group(1)))
    wrong = []
    for name, cls in error_classes().items():
        if name not in shown:
            wrong.append(f"{name}: not in the tree")
        elif shown[name] and int(shown[name]) != cls.http_status:
            wrong.append(f"{name}: ({shown[name]}) in the tree, the class says {cls.http_status}")
    assert not wrong, "docs/errors.md tree:\n" + "\n".join(wrong)
