"""Unit tests of daskscore.worker.codeimport: every import of a code folder gets the folder's
modules as its files are now, while older imports of it (or of other folders) are still open,
and forgetting them in any order leaves the process as it was."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest

from daskscore.worker.codeimport import open_code

#: run() returns its prefix + the helper it imported, and the helper a lookup finds now
SCORE = """import helper

def run(mini_batch):
    import helper as now
    return {!r} + helper.NAME, now.NAME
"""


def _write(code: Path, prefix: str, name: str) -> None:
    code.mkdir(parents=True, exist_ok=True)
    (code / "score.py").write_text(SCORE.format(prefix))
    (code / "helper.py").write_text(f"NAME = {name!r}\n")


def test_an_edited_folder_imported_again_gets_its_current_sibling_modules(
    tmp_path: Path,
) -> None:
    code = tmp_path / "code"
    _write(code, "", "helper-B")
    old = open_code(code)
    new = None
    try:
        first = old.load(code / "score.py")
        assert first.run([]) == ("helper-B", "helper-B")
        _write(code, "v2-", "helper-version-2")  # (another size: Python's bytecode check)
        new = open_code(code)
        second = new.load(code / "score.py")
        assert second.run([]) == ("v2-helper-version-2", "helper-version-2")
        # the older import keeps the helper it imported; a lookup finds the newest's
        assert first.run([]) == ("helper-B", "helper-version-2")
        old.forget()  # the older closes first: the newer keeps its modules and the path
        assert second.run([]) == ("v2-helper-version-2", "helper-version-2")
        assert str(code) in sys.path
    finally:
        old.forget()
        if new is not None:
            new.forget()
    assert "helper" not in sys.modules and "score" not in sys.modules
    assert str(code) not in sys.path


@pytest.mark.parametrize("order", ["older-first", "newer-first"])
def test_the_processs_own_module_comes_back_whatever_order_the_imports_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    own = tmp_path / "driver" / "helper.py"
    own.parent.mkdir()
    own.write_text("NAME = 'driver'\n")
    spec = importlib.util.spec_from_file_location("helper", own)
    assert spec is not None and spec.loader is not None
    mine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mine)
    monkeypatch.setitem(sys.modules, "helper", mine)
    code = tmp_path / "code"
    _write(code, "", "one")
    older = open_code(code)
    assert older.load(code / "score.py").run([]) == ("one", "one")
    _write(code, "", "three")
    newer = open_code(code)
    assert newer.load(code / "score.py").run([]) == ("three", "three")
    first, second = (older, newer) if order == "older-first" else (newer, older)
    first.forget()
    if order == "newer-first":  # the older one's helper is back for it
        assert sys.modules["helper"].NAME == "one"
    second.forget()
    assert sys.modules["helper"] is mine


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_imports_of_two_folders_each_find_their_own_modules_when_made_current_again(
    tmp_path: Path, order: tuple[int, ...]
) -> None:
    """A's folder already on sys.path (an older import of it still open) no longer leaves B's,
    opened since, ahead of it; an older import made current again (each of its mini-batches)
    finds its own helper in a lookup; forgetting them in any order leaves the process clean."""
    a, b = tmp_path / "A", tmp_path / "B"
    _write(a, "", "helper of A")
    _write(b, "", "helper of B")
    opened = [open_code(a)]
    try:
        scripts = [opened[0].load(a / "score.py")]
        for code in (b, a):
            opened.append(open_code(code))
            scripts.append(opened[-1].load(code / "score.py"))
        assert scripts[2].run([]) == ("helper of A", "helper of A")  # (was helper of B)
        assert sys.path[:2] == [str(a), str(b)]
        for i in (1, 0, 2, 1):
            opened[i].reassert()
            assert scripts[i].run([])[1] == scripts[i].run([])[0]
            assert sys.path[0] == opened[i].code
        for i in order:
            opened[i].forget()
            for j in set(range(3)) - set(order[: order.index(i) + 1]):
                opened[j].reassert()
                assert scripts[j].run([])[1] == scripts[j].run([])[0]
    finally:
        for one in opened:
            one.forget()
    assert "helper" not in sys.modules and "score" not in sys.modules
    assert str(a) not in sys.path and str(b) not in sys.path
