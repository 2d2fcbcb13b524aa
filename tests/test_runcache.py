"""Run-cache keys: the code fingerprint follows the code, not its prose, through every module the code imports."""
from __future__ import annotations

import sys

import pytest
import torch

from vlmlab.runcache import closure_fingerprint, code_text, module_closure, tensor_digest

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


def _code(tmp_path, name, text):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return code_text(path)


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("Module docstring.", "Another module docstring."),
    lambda s: s.replace('"""Docstring."""', '"""A longer\n    docstring."""'),
    lambda s: s.replace("# a comment", "# another comment"),
    lambda s: s.replace("\n\nclass A", "\n# a new comment line\n\nclass A"),
    lambda s: s.replace('"only a docstring"', '"""edited"""'),
])
def test_comments_and_docstrings_keep_the_code_text(tmp_path, edit):
    assert _code(tmp_path, "m0", SOURCE) == _code(tmp_path, "m1", edit(SOURCE))


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("math.sqrt(x)", "math.sqrt(x) + 0"),
    lambda s: s.replace('"only a docstring"', '"only a docstring"\n        return 1'),
    lambda s: s.replace("def g(self)", "def h(self)"),
    lambda s: s.replace('    """Docstring."""\n    return', '    x = "Docstring."\n    return'),   # a string that is code
])
def test_code_edits_change_the_code_text(tmp_path, edit):
    assert _code(tmp_path, "m0", SOURCE) != _code(tmp_path, "m1", edit(SOURCE))


def test_code_text_drops_the_prose_and_still_compiles(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    text = code_text(path)
    compile(text, "<code_text>", "exec")
    assert "docstring" not in text.lower() and "comment" not in text
    assert "pass" in text and "math.sqrt(x)" in text            # g's body was only a docstring


PACKAGE = {
    "__init__.py": "",
    "top.py": "import pk.direct\nfrom pk import sibling\nfrom pk.helpers import name\n\n"
              "def f():\n    from pk.lazy import g\n    return g\n",
    "direct.py": "from .deep import x\n",
    "sibling.py": "import math\n",
    "helpers.py": "name = 1\n",
    "lazy.py": "def g():\n    return 2\n",
    "deep.py": '"""Deep."""\nx = 3\n',
    "unused.py": "y = 4\n",
}


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway package ``pk`` (not imported: the closure reads the sources)."""
    root = tmp_path / "pk"
    root.mkdir()
    for name, text in PACKAGE.items():
        (root / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    closure_fingerprint.cache_clear()
    for name in [m for m in sys.modules if m == "pk" or m.startswith("pk.")]:   # find_spec imported the package
        del sys.modules[name]


def test_module_closure_follows_every_import_of_the_package_and_nothing_else(package):
    assert module_closure("pk.top", package="pk") == ["pk.deep", "pk.direct", "pk.helpers", "pk.lazy", "pk.sibling",
                                                      "pk.top"]          # not pk.unused, not math
    assert module_closure("pk.direct", package="pk") == ["pk.deep", "pk.direct"]      # a relative import


def test_closure_fingerprint_moves_with_code_deep_in_the_closure_but_not_with_its_prose(package):
    before = closure_fingerprint("pk.top", package="pk")
    (package / "deep.py").write_text('"""Another docstring."""\nx = 3  # a comment\n')
    closure_fingerprint.cache_clear()
    assert closure_fingerprint("pk.top", package="pk") == before
    (package / "deep.py").write_text("x = 4\n")
    closure_fingerprint.cache_clear()
    assert closure_fingerprint("pk.top", package="pk") != before
    (package / "unused.py").write_text("y = 5\n")                      # outside the closure
    after = closure_fingerprint("pk.top", package="pk")
    closure_fingerprint.cache_clear()
    assert closure_fingerprint("pk.top", package="pk") == after


def test_main_has_no_closure_its_spec_is_the_launchers_file():
    """In a notebook, classes live in ``__main__``, whose spec names ipykernel's launcher, not their code."""
    with pytest.raises(ModuleNotFoundError, match="__main__"):
        module_closure("__main__")


def test_module_closure_of_a_tta_method_holds_what_it_runs():
    mods = module_closure("vlmlab.tta.uniinfo")
    assert {"vlmlab.tta.uniinfo", "vlmlab.tta.base", "vlmlab.models.lora", "vlmlab.metrics.embedding",
            "vlmlab.models.bundle"} <= set(mods)
    assert "vlmlab.tta.tpt" not in mods and "vlmlab.coop.train" not in mods


@pytest.mark.parametrize("t", [torch.arange(12, dtype=torch.float32).reshape(3, 4).T,     # not contiguous
                               torch.tensor([1.5, -2.0], dtype=torch.bfloat16), torch.zeros(0, 3)])
def test_tensor_digest_is_the_sha1_of_dtype_shape_and_bytes(t):
    import hashlib

    ref = hashlib.sha1()
    ref.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        ref.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    assert tensor_digest(t) == ref.hexdigest()
    assert tensor_digest(t, None) != tensor_digest(t) and tensor_digest(None) != tensor_digest(torch.zeros(0))


def test_coop_and_fine_tuning_keys_fingerprint_their_trainers_and_every_helper_they_import():
    """The trained-run keys' code part is the closure's: an edit to a helper (the image preprocessing in
    ``vlmlab.features``, the autocast in ``vlmlab.models.bundle``) retrains, as an edit to the trainer does."""
    from vlmlab.blind.experiment import finetune_key
    from vlmlab.blind.finetune import FinetuneConfig
    from vlmlab.coop import jobs

    assert jobs._code_fingerprint() == closure_fingerprint("vlmlab.coop.train", "vlmlab.coop.batched")
    assert {"vlmlab.coop.text_batch", "vlmlab.prompts", "vlmlab.models.bundle"} <= set(
        module_closure("vlmlab.coop.train", "vlmlab.coop.batched"))
    key = finetune_key("m", FinetuneConfig(), "data", ("depth", "lora"))
    assert key["code"] == closure_fingerprint("vlmlab.blind.experiment", "vlmlab.blind.finetune")
    assert {"vlmlab.blind.vlm", "vlmlab.features", "vlmlab.models.bundle"} <= set(
        module_closure("vlmlab.blind.experiment", "vlmlab.blind.finetune"))


def test_history_rows_go_through_the_cache_tensor_and_back_unchanged():
    from vlmlab.runcache import rows_to_tensor, tensor_to_rows
    cols = ("step", "loss", "val_acc")
    rows = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25, "val_acc": 75.0}]
    table = rows_to_tensor(rows, cols)
    assert table.shape == (2, 3) and table.dtype == torch.float64 and torch.isnan(table[0, 2])
    back = tensor_to_rows(table, cols, ints=("step",))
    assert back == rows and isinstance(back[0]["step"], int) and list(back[1]) == list(cols)
    assert rows_to_tensor(rows + [{"step": 3, "other": 1.0}], cols) is None     # could not be restored whole
    assert rows_to_tensor([], cols).shape == (0, 3) and tensor_to_rows(rows_to_tensor([], cols), cols) == []
