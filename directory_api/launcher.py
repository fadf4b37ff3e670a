"""What runs before the CLI is imported: refuse a Python too old for it; in the pyz, pick where shiv unpacks.

The pyz's __main__.py is this file (build.sh puts it there), and directory_api.py calls it first: an old
python3 must be able to compile it. So its syntax stays that of Python 3.6 (and 2.7: no annotations, no
f-strings) and it imports the standard library alone.
"""

import errno
import json
import os
import stat
import sys
import time
import zipfile

NEEDED = (3, 11)
TOO_OLD = (
    "directory-api needs Python {needed} or newer, and {executable} is Python {found}: install python3.11 or "
    "newer (Debian/Ubuntu: apt-get install python3.11; Amazon Linux 2023, RHEL 9: dnf install python3.11) "
    "and run it with that, e.g. /usr/bin/python3.11 {program} --help (systemd units: "
    "ExecStart=/usr/bin/python3.11 {program} serve)"
)
CANNOT_UNPACK = (
    "directory-api cannot unpack itself into {root} ({reason}), nor into {fallback}: "
    "set SHIV_ROOT to a writable directory (the systemd units set SHIV_ROOT=/var/cache/directory-api)"
)
SHIV_ROOT_UNUSABLE = (
    "SHIV_ROOT={root}: directory-api cannot unpack itself there ({reason}); set SHIV_ROOT to a writable directory"
)
UNPACKED_INCOMPLETE = (
    "directory-api's unpacked copy in {path} is missing files (a cleaner of {parent}?): remove {path}, "
    "or set SHIV_ROOT to a writable directory of its own"
)


def too_old(version_info, executable, program):
    """The one-line refusal for `version_info`, or None when it is new enough."""
    if tuple(version_info[:2]) >= NEEDED:
        return None
    return TOO_OLD.format(
        needed="%d.%d" % NEEDED,
        executable=executable or "python3",
        found="%d.%d.%d" % tuple(version_info[:3]),
        program=program,
    )


def refuse_old_python(program):
    """Exit 2 with one line when this Python is older than the code needs; `program` is how to run it."""
    message = too_old(sys.version_info, sys.executable, program)
    if message:
        fail(message)


def fail(message):
    """The CLI's way to end on a user error: one line on stderr (JSON under LOG_FORMAT=json), exit 2."""
    if os.environ.get("LOG_FORMAT") == "json":
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (int(now * 1000) % 1000)
        line = json.dumps({"time": stamp, "level": "ERROR", "logger": "directory_api.launcher", "message": message})
    else:
        line = "error: " + message
    sys.stderr.write(line + "\n")
    sys.exit(2)


def unpack_problem(root, unpacked):
    """Why shiv cannot unpack into `root` (a string), or None when it can or already has."""
    if root.startswith("~"):  # no HOME and no passwd entry: expanduser left it, and shiv would make ./~/.shiv
        return "no home directory"
    if os.path.isdir(os.path.join(root, unpacked, "site-packages")):
        return None
    try:
        os.makedirs(root)
    except OSError as error:
        if not os.path.isdir(root):
            return error.strerror or str(error)
    if not os.access(root, os.W_OK | os.X_OK):
        return os.strerror(errno.EACCES)
    return None


def private_directory_problem(path, uid):
    """Make `path` a directory only `uid` can use, or say why it is not one (it may be another user's)."""
    try:
        os.mkdir(path, 0o700)
    except OSError as error:
        if error.errno != errno.EEXIST:
            return error.strerror or str(error)
    status = os.lstat(path)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != uid or status.st_mode & 0o077:
        return "not a directory of this user's alone"
    return None


def fallback_roots(environ, uid):
    """Where to unpack when the home directory cannot be written, best first: (path, shared) pairs.

    A shared one sits in a directory anyone may write (/tmp), so it is used only as a private directory.
    """
    roots = []
    cache = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(cache):
        roots.append((os.path.join(cache, "directory-api"), False))
    roots.append((os.path.join("/tmp", "directory-api-%d" % uid), True))
    return roots


def missing_files(archive, unpacked_path):
    """Whether a file of the archive's site-packages is absent from an unpacked copy that exists."""
    site_packages = os.path.join(unpacked_path, "site-packages")
    if not os.path.isdir(site_packages):
        return False
    return any(
        not os.path.lexists(os.path.join(unpacked_path, name))
        for name in archive.namelist()
        if name.startswith("site-packages/") and not name.endswith("/")
    )


def choose_unpack_root(archive_path, environ, uid):
    """Set SHIV_ROOT in `environ` when shiv's own choice (SHIV_ROOT, else ~/.shiv) cannot be written; else fail."""
    with zipfile.ZipFile(archive_path) as archive:
        build_id = json.loads(archive.read("environment.json").decode("utf-8"))["build_id"]
        # shiv's name for the unpacked copy (bootstrap.cache_path).
        unpacked = "%s_%s" % (os.path.basename(os.path.realpath(archive_path)), build_id)
        if environ.get("SHIV_ROOT"):
            root = os.path.expanduser(environ["SHIV_ROOT"])
            reason = unpack_problem(root, unpacked)
            if reason:
                fail(SHIV_ROOT_UNUSABLE.format(root=root, reason=reason))
            return
        home_root = os.path.expanduser("~/.shiv")
        reason = unpack_problem(home_root, unpacked)
        if not reason:
            return
        for root, shared in fallback_roots(environ, uid):
            problem = private_directory_problem(root, uid) if shared else unpack_problem(root, unpacked)
            if problem is None:
                # A /tmp cleaner deletes old files one by one; an unpacked copy it thinned out would fail later.
                if missing_files(archive, os.path.join(root, unpacked)):
                    fail(UNPACKED_INCOMPLETE.format(path=os.path.join(root, unpacked), parent=os.path.dirname(root)))
                environ["SHIV_ROOT"] = root
                return
        fallbacks = " or ".join(root for root, _ in fallback_roots(environ, uid))
        fail(CANNOT_UNPACK.format(root=home_root, reason=reason, fallback=fallbacks))


def run_pyz():
    """The pyz's entry: the checks above, then shiv's bootstrap, which unpacks and calls directory_api.cli:main."""
    refuse_old_python(os.path.abspath(sys.argv[0]))
    choose_unpack_root(sys.argv[0], os.environ, os.getuid())
    import _bootstrap  # shiv's, at the archive's root

    _bootstrap.bootstrap()


if __name__ == "__main__":
    run_pyz()
