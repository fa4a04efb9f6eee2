"""conftest.py -- the compose test's fixture: one compose project, torn down
with `down -v` whatever happens. See test_compose.py."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
