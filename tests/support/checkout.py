"""This checkout: where it is, how to run the service from its source, and whether CI runs the tests."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
# The service run from this checkout's source, as `python directory_api.py ...`.
SOURCE_CLI = (sys.executable, str(REPO / "directory_api.py"))
# Under CI=true a test that cannot run (no PostgreSQL, no browser) fails instead of skipping.
IN_CI = os.environ.get("CI", "").lower() == "true"
