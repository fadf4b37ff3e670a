#!/usr/bin/env bash
# Build dist/directory-api.pyz: one file that runs with python3 >= 3.11 on Linux
# x86_64 and aarch64 with nothing else installed.
#
#   ./build.sh                      # or: make build
#   SOURCE_DATE_EPOCH=... ./build.sh
#   PYTHON=/path/to/python3 ./build.sh   (default: python3; 3.11 or newer, with venv)
#
# A fresh clone needs nothing else but the package index: every build makes a
# throwaway virtualenv with the pinned build tools of requirements-build.txt.
#
# The same sources give the same bytes: the third-party packages are the
# pinned wheels of requirements.txt (never built here), our package is copied
# as source (no build backend, so no build-time metadata), every file gets the
# same mode, and shiv writes every zip entry with the timestamp
# SOURCE_DATE_EPOCH (default: the time of the last commit).
set -euo pipefail
cd "$(dirname "$0")"
umask 022

PYTHON="${PYTHON:-python3}"
# Only used to date the zip entries; a fixed fallback keeps builds outside git reproducible too.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 1577836800)}"
export SOURCE_DATE_EPOCH
# The psycopg2 C extension is built per Python minor version and CPU: pack one
# for each version and CPU the pyz may meet, so any python3 >= 3.11 on Linux
# x86_64 or aarch64 (an AWS Graviton VM) can run it (and the pyz is the same
# whichever of them builds it). psycopg2 is the only package with compiled code.
EXTRA_PYTHON_VERSIONS="${EXTRA_PYTHON_VERSIONS-3.11 3.12 3.13 3.14}"  # set it empty for none
# psycopg2-binary's wheel tag for each: its aarch64 wheels of 2.9.12 and later need glibc 2.28 (Debian 10,
# RHEL 8, Amazon Linux 2023 and Ubuntu 20.04 have it or newer).
LINUX_PLATFORMS="${LINUX_PLATFORMS-manylinux2014_x86_64 manylinux_2_28_aarch64}"
OUTPUT=dist/directory-api.pyz

# What the pyz leaves out of the pinned packages. botocore ships data for every
# AWS service (28 MB); the service calls SQS alone. Kept: the SQS model, the
# services boto3's credential chain calls (sts: assumed roles and web identity;
# sso, sso-oidc: SSO; signin: `aws login`), endpoints and partitions, and the
# retry and defaults-mode files. tests/e2e/test_pyz_contents.py runs every SQS
# call and those credential paths through the pyz, and names this list.
BOTOCORE_DATA=(_retry.json endpoints.json partitions.json sdk-default-configuration.json
               sqs sts sso sso-oidc signin)
# boto3's resource models: the service makes clients only.
OMITTED=(boto3/data)

fail() {
    printf 'build.sh: %s\n' "$*" >&2
    exit 1
}

# pip_or_fail WHAT COMMAND...: run a pip command quietly; if it fails, show its last words and say why.
pip_or_fail() {
    local what="$1"
    shift
    if ! "$@" >"$work/pip.log" 2>&1; then
        tail -n 8 "$work/pip.log" >&2
        if grep -qiE 'NewConnectionError|ConnectTimeout|Connection (refused|reset)|Name or service not known|Temporary failure in name resolution|Network is unreachable|ProxyError|SSLError|ReadTimeout|from versions: none' "$work/pip.log"; then
            fail "cannot fetch $what: the package index is not reachable from here (pip's words above; PIP_INDEX_URL points pip at a mirror)"
        fi
        fail "pip could not install $what (its words above)"
    fi
}

command -v "$PYTHON" >/dev/null || fail "no $PYTHON here: install Python 3.11 or newer (with its venv module), or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'): 3.11 or newer is needed (set PYTHON=/path/to/python3)"
"$PYTHON" -c 'import venv' 2>/dev/null ||
    fail "$PYTHON has no venv module, which the build needs for its own build tools (Debian and Ubuntu: apt-get install python3-venv)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The build's own tools, from requirements-build.txt, whatever else this machine has.
tools="$work/build-env"
if ! "$PYTHON" -m venv "$tools" >"$work/venv.log" 2>&1; then
    tail -n 8 "$work/venv.log" >&2
    fail "$PYTHON -m venv could not make the build environment: its pip (ensurepip) is missing (Debian and Ubuntu: apt-get install python3-venv)"
fi
pip=("$tools/bin/python" -m pip --disable-pip-version-check --no-input)
pip_or_fail "the build tools of requirements-build.txt" \
    "${pip[@]}" install --no-deps --only-binary :all: -r requirements-build.txt

site="$work/site-packages"
pip_install=("${pip[@]}" install --no-deps --no-compile --only-binary :all:)
pip_or_fail "the pinned packages of requirements.txt" "${pip_install[@]}" --target "$site" -r requirements.txt

if [[ "$(uname -s)" == Linux ]]; then
    psycopg2_pin="$(grep -i '^psycopg2-binary==' requirements.txt)"
    for platform in $LINUX_PLATFORMS; do
        for version in $EXTRA_PYTHON_VERSIONS; do
            extra="$work/python-$version-$platform"
            pip_or_fail "$psycopg2_pin for Python $version on $platform" "${pip_install[@]}" --target "$extra" \
                --implementation cp --python-version "$version" --platform "$platform" "$psycopg2_pin"
            # Only the extension module and its libraries differ; their file names carry the version, the CPU
            # and a hash of each library, so the CPUs' copies sit side by side.
            cp -Rn "$extra/psycopg2/." "$site/psycopg2/"
            cp -Rn "$extra/psycopg2_binary.libs/." "$site/psycopg2_binary.libs/"
        done
    done
fi

# botocore/data afterwards holds the listed entries alone; a listed one missing stops the build.
data="$site/botocore/data"
mv "$data" "$work/botocore-data"
mkdir "$data"
for name in "${BOTOCORE_DATA[@]}"; do
    [[ -e "$work/botocore-data/$name" ]] || fail "botocore has no data/$name any more: update BOTOCORE_DATA in build.sh"
    mv "$work/botocore-data/$name" "$data/"
done
for path in "${OMITTED[@]}"; do
    rm -rf "${site:?}/$path"
done

tar --exclude=__pycache__ --exclude='*.pyc' -cf - directory_api | tar -xf - -C "$site"
# env-write's default config when the current directory has no env.json (a VM may hold the pyz alone).
cp env.json "$site/directory_api/env.json"
# The commit `--version` names (directory_api.release.build_commit), "-dirty" when the sources differ from it;
# "unknown" outside a git checkout of its own (a tarball inside another project's repository, say).
commit=unknown
if [[ "$(git rev-parse --show-toplevel 2>/dev/null)" == "$(pwd -P)" ]]; then
    commit="$(git rev-parse --short=12 HEAD)"
    git diff --quiet HEAD -- || commit="$commit-dirty"
fi
printf '"""Written by build.sh."""\n\nCOMMIT = "%s"\n' "$commit" >"$site/directory_api/_build.py"
# Console scripts carry the build environment's python path; the pyz has its own entry point.
rm -rf "$site/bin"
# RECORD lists them too, with hashes of that path: gone with them, so the bytes do not depend on where this runs.
"$tools/bin/python" - "$site" <<'PY'
import pathlib, sys
for record in pathlib.Path(sys.argv[1]).glob("*.dist-info/RECORD"):
    lines = record.read_bytes().splitlines(keepends=True)
    record.write_bytes(b"".join(line for line in lines if not line.startswith(b"../")))
PY
chmod -R u=rwX,go=rX "$site"

"$tools/bin/python" -m shiv --reproducible \
    --entry-point directory_api.cli:main \
    --python '/usr/bin/env python3' \
    --site-packages "$site" \
    --output-file "$work/directory-api.pyz" >/dev/null

# shiv's __main__.py imports its bootstrap, which unpacks everything before our code runs: too late to tell
# an old python3 what it needs, or to pick a writable place when the home directory is not one.
# directory_api/launcher.py (plain enough for Python 3.6) becomes __main__.py and calls the bootstrap itself.
"$tools/bin/python" - "$work/directory-api.pyz" directory_api/launcher.py <<'PY'
import os, shutil, sys, zipfile
pyz, launcher = sys.argv[1], sys.argv[2]
with open(pyz, "rb") as file:
    shebang = file.readline()
with open(launcher, "rb") as file:
    main = file.read()
with zipfile.ZipFile(pyz) as source, open(pyz + ".new", "wb") as file:
    file.write(shebang)
    with zipfile.ZipFile(file, "w") as target:
        for info in source.infolist():
            # The same entry (name, time, mode, compression) in the same place: the bytes stay reproducible.
            entry = zipfile.ZipInfo(info.filename, info.date_time)
            entry.external_attr, entry.compress_type = info.external_attr, info.compress_type
            target.writestr(entry, main if info.filename == "__main__.py" else source.read(info))
shutil.copymode(pyz, pyz + ".new")
os.replace(pyz + ".new", pyz)
PY

mkdir -p dist
mv -f "$work/directory-api.pyz" "$OUTPUT"
echo "$OUTPUT"
echo "sha256 $(sha256sum "$OUTPUT" | cut -d' ' -f1)"
