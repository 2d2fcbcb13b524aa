"""``load_script("benchmarks/x.py")``: a script of the repository (not a package) as a module, for the tests."""
from __future__ import annotations

import importlib.util
import sys

from vlmlab.runtime import REPO_ROOT


def load_script(relative: str):
    """Import ``REPO_ROOT / relative`` under its file stem, registered in ``sys.modules`` (dataclasses and
    pickling look a class's module up there)."""
    path = REPO_ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
