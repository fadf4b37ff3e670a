"""The commit this release was built from, for `--version`."""

from pathlib import Path

# What build.sh writes into the pyz's copy of the package: COMMIT = "<short hash>".
BUILD_MODULE = "directory_api._build"


def build_commit() -> str:
    """The commit this code was built from: stamped by build.sh, else git's HEAD for a checkout, else "unknown"."""
    import importlib  # here, not above: every command imports this package, one in a thousand asks its commit

    try:
        return str(importlib.import_module(BUILD_MODULE).COMMIT)
    except ImportError:
        return _checkout_commit(Path(__file__).resolve().parent.parent) or "unknown"


def _checkout_commit(root: Path) -> str | None:
    """HEAD's short hash when `root` is the top of a git work tree (not merely inside another project's)."""
    import subprocess

    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None
    return lines[1]
