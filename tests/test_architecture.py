"""
The import structure docs/architecture.md describes, checked against the
code: tools/importcheck.py finds nothing, its picture in the docs is
current, and no module grows far past the house size.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


def _importcheck():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("importcheck", ROOT / "tools" / "importcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ImportStructureTests(SynchronousTestCase):
    def test_noProblems(self) -> None:
        """No import cycle, no private name across modules, no lazy or upward lbkit import."""
        self.assertEqual(_importcheck().scan(ROOT / "lbkit"), [])

    def test_pictureIsCurrent(self) -> None:
        """The who-imports-whom picture in docs/architecture.md is what the code says today."""
        check = _importcheck()
        graph: dict[str, set[str]] = {}
        check.scan(ROOT / "lbkit", graph)
        docs = (ROOT / "docs" / "architecture.md").read_text()
        self.assertIn(check.picture(graph), docs, "run: python tools/importcheck.py --picture")

    def test_cycleFound(self) -> None:
        """The checker does see a cycle, a private name and an upward import (it can fail)."""
        tree = Path(self.mktemp()) / "lbkit"
        tree.mkdir(parents=True)
        (tree / "__init__.py").write_text("")
        (tree / "_model.py").write_text("from lbkit.service import _hidden\n")
        (tree / "service.py").write_text("def f():\n    from lbkit import _model\n")
        problems = "\n".join(_importcheck().scan(tree))
        self.assertIn("import cycle", problems)
        self.assertIn("private name _hidden", problems)
        self.assertIn("lazy import of lbkit._model", problems)
        self.assertIn("layer 6, application", problems)

    def test_moduleSize(self) -> None:
        """No module of lbkit is much over the house limit of about 500 lines."""
        big = []
        for directory, _, names in os.walk(ROOT / "lbkit"):
            for name in names:
                if name.endswith(".py"):
                    path = Path(directory) / name
                    lines = len(path.read_text().splitlines())
                    if lines > 520:
                        big.append(f"{path.relative_to(ROOT)}: {lines}")
        self.assertEqual(big, [])
