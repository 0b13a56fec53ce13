"""The README's Python examples run and print what the README says."""

from __future__ import annotations

import doctest

from helpers import REPO


def test_readme_python_examples(monkeypatch):
    monkeypatch.chdir(REPO)
    # A code fence right after an expected output would read as part of it: blank the fences.
    text = "\n".join(
        "" if line.startswith("```") else line
        for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    )
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    runner.run(test)
    assert runner.tries >= 8
    assert runner.failures == 0
