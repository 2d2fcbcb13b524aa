"""Run-cache keys: the code fingerprint follows the code, not its prose."""
from __future__ import annotations

import importlib.util

import pytest

from vlmlab.runcache import code_fingerprint, code_text

SOURCE = '''"""Module docstring."""
import math


def f(x):
    """Docstring."""
    return math.sqrt(x)  # a comment


class A:
    """Class docstring."""

    def g(self):
        "only a docstring"
'''


def _module(tmp_path, name, text):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("Module docstring.", "Another module docstring."),
    lambda s: s.replace('"""Docstring."""', '"""A longer\n    docstring."""'),
    lambda s: s.replace("# a comment", "# another comment"),
    lambda s: s.replace("\n\nclass A", "\n# a new comment line\n\nclass A"),
    lambda s: s.replace('"only a docstring"', '"""edited"""'),
])
def test_comments_and_docstrings_keep_the_fingerprint(tmp_path, edit):
    assert code_fingerprint(_module(tmp_path, "m0", SOURCE)) == code_fingerprint(_module(tmp_path, "m1", edit(SOURCE)))


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("math.sqrt(x)", "math.sqrt(x) + 0"),
    lambda s: s.replace('"only a docstring"', '"only a docstring"\n        return 1'),
    lambda s: s.replace("def g(self)", "def h(self)"),
    lambda s: s.replace('    """Docstring."""\n    return', '    x = "Docstring."\n    return'),   # a string that is code
])
def test_code_edits_change_the_fingerprint(tmp_path, edit):
    assert code_fingerprint(_module(tmp_path, "m0", SOURCE)) != code_fingerprint(_module(tmp_path, "m1", edit(SOURCE)))


def test_code_text_drops_the_prose_and_still_compiles(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    text = code_text(path)
    compile(text, "<code_text>", "exec")
    assert "docstring" not in text.lower() and "comment" not in text
    assert "pass" in text and "math.sqrt(x)" in text            # g's body was only a docstring
