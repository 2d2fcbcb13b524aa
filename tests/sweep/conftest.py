"""Shared sweep fixtures: cases run a tiny fake notebook (the module's FAKE_NOTEBOOK script) instead of papermill."""
from __future__ import annotations

import json
import sys

import pytest

from vlmlab.sweep import CaseJob


@pytest.fixture
def fake_notebook(monkeypatch, request):
    """Make every ``CaseJob`` run ``request.module.FAKE_NOTEBOOK`` with (case dir, case params as JSON)."""
    script = request.module.FAKE_NOTEBOOK

    def command(self, python=None):
        return [sys.executable, "-c", script, str(self.dir), json.dumps(self.case.params)]

    monkeypatch.setattr(CaseJob, "command", command)
