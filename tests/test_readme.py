"""The README's library example runs as written and prints what the README says."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", text, re.S)


def test_the_library_example_prints_what_the_readme_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It imported ZoneResolver without using it, assumed a resolver it did not name, and
    showed `SpfResult.PASS` where print gives `pass` (issue 19)."""
    section = (ROOT / "README.md").read_text().split("## Library", 1)[1].split("\n## ", 1)[0]
    blocks = _blocks(section)
    code = next(body for kind, body in blocks if kind == "python")
    shown = next(body for kind, body in blocks if kind == "")
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("error")  # (no key-file warning either)
        namespace: dict[str, object] = {}
        exec(compile(code, "README.md", "exec"), namespace)  # (our own README)
    assert out.getvalue().replace("\r\n", "\n") == shown
    imported = re.findall(r"^from \S+ import (.+)$", code, re.M)
    for name in (n.strip() for line in imported for n in line.split(",")):
        assert len(re.findall(rf"\b{name}\b", code)) > 1, f"{name} is imported, never used"


def test_the_conformance_summary_says_which_differences_are_expected() -> None:
    from tests.conftest import _CONFORMANCE, _DIFFERENCES, conformance_lines

    saved = dict(_CONFORMANCE), dict(_DIFFERENCES)
    try:
        _CONFORMANCE.clear()
        _DIFFERENCES.clear()
        from tests.conftest import record_conformance

        for agrees in [True] * 38 + [False] * 24:
            record_conformance("Corpus X", agrees, differences_explained_in="docs/dkim.md")
        record_conformance("Suite Y", True)
        lines = conformance_lines()
    finally:
        _CONFORMANCE.clear()
        _CONFORMANCE.update(saved[0])
        _DIFFERENCES.clear()
        _DIFFERENCES.update(saved[1])
    assert lines[1] == (
        "Corpus X: 38 of 62 cases agree; the other 24 are expected differences, each "
        "explained in docs/dkim.md (not failures)"
    )
    assert lines[2] == "Suite Y: 1 of 1 cases passed"
    assert "README" not in lines[0] and "expected" in lines[0]
