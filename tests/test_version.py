"""The release and the commit `--version` names."""

import subprocess
import sys

from directory_api import __version__
from directory_api.release import BUILD_MODULE, _checkout_commit, build_commit
from tests.support.checkout import REPO


def test_this_release_is_1_1_0():
    assert __version__ == "1.1.0"


def test_from_a_checkout_the_commit_is_gits_head():
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert build_commit() == head


def test_a_folder_that_is_not_the_top_of_a_checkout_has_no_commit(tmp_path):
    assert _checkout_commit(tmp_path) is None
    assert _checkout_commit(REPO / "directory_api") is None  # inside a checkout, but not its top


def test_the_commit_stamped_by_the_build_wins(monkeypatch):
    stamp = type(sys)(BUILD_MODULE)
    stamp.COMMIT = "0123456789ab"
    monkeypatch.setitem(sys.modules, BUILD_MODULE, stamp)
    assert build_commit() == "0123456789ab"
