"""directory-api: the Export Directory enrolment service."""

# Python 3.6 to 3.10 import this package before launcher.py can refuse them: keep it to syntax they compile
# (the commit `--version` names is in release.py).
__version__ = "1.1.0"
