"""`llm_gym --help` must stay instant: it may not import torch, pydantic or omegaconf."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import json, sys
from llm_gym.cli.main import main
try:
    main(["--help"])
except SystemExit:
    pass
heavy = [m for m in ("torch", "pydantic", "omegaconf", "numpy", "class_resolver")
         if m in sys.modules]
print(json.dumps(heavy), file=sys.stderr)
"""


def test_help_imports_nothing_heavy():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            cwd=REPO, check=True)
    assert "recipe" in result.stdout and "components" in result.stdout
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []


def test_python_dash_m_and_console_script_agree():
    via_module = subprocess.run([sys.executable, "-m", "llm_gym", "--version"],
                                capture_output=True, text=True, check=True)
    assert "llm_gym" in via_module.stdout
