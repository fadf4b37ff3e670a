#!/usr/bin/env bash
# Build dist/directory-api.pyz: one file that runs with python3 >= 3.11 on this
# platform (OS and CPU) with nothing else installed.
#
#   ./build.sh                      # or: make build
#   SOURCE_DATE_EPOCH=... ./build.sh
#   PYTHON=/path/to/python3 ./build.sh   (default: .venv/bin/python, else python3; needs shiv)
#
# The same sources give the same bytes: the third-party packages are the
# pinned wheels of requirements.txt (never built here), our package is copied
# as source (no build backend, so no build-time metadata), every file gets the
# same mode, and shiv writes every zip entry with the timestamp
# SOURCE_DATE_EPOCH (default: the time of the last commit).
set -euo pipefail
cd "$(dirname "$0")"
umask 022

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Only used to date the zip entries; a fixed fallback keeps builds outside git reproducible too.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 1577836800)}"
export SOURCE_DATE_EPOCH
# The psycopg2 C extension is built per Python minor version: pack one for each
# version the pyz may meet, so any python3 >= 3.11 on this platform can run it.
EXTRA_PYTHON_VERSIONS="${EXTRA_PYTHON_VERSIONS-3.12 3.13 3.14}"  # set it empty for none
OUTPUT=dist/directory-api.pyz

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
site="$work/site-packages"
pip_install=("$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile
             --only-binary :all:)

"${pip_install[@]}" --target "$site" -r requirements.txt

if [[ "$(uname -s)" == Linux ]]; then
    psycopg2_pin="$(grep -i '^psycopg2-binary==' requirements.txt)"
    for version in $EXTRA_PYTHON_VERSIONS; do
        extra="$work/python-$version"
        "${pip_install[@]}" --target "$extra" --implementation cp --python-version "$version" \
            --platform "manylinux2014_$(uname -m)" "$psycopg2_pin"
        # Only the extension module differs; its file name carries the version.
        cp -Rn "$extra/psycopg2/." "$site/psycopg2/"
        cp -Rn "$extra/psycopg2_binary.libs/." "$site/psycopg2_binary.libs/"
    done
fi

tar --exclude=__pycache__ --exclude='*.pyc' -cf - directory_api | tar -xf - -C "$site"
# Console scripts carry this machine's python path; the pyz has its own entry point.
rm -rf "$site/bin"
chmod -R u=rwX,go=rX "$site"

"$PYTHON" -m shiv --reproducible --compile-pyc \
    --entry-point directory_api.cli:main \
    --python '/usr/bin/env python3' \
    --site-packages "$site" \
    --output-file "$work/directory-api.pyz" >/dev/null

mkdir -p dist
mv -f "$work/directory-api.pyz" "$OUTPUT"
echo "$OUTPUT"
echo "sha256 $(sha256sum "$OUTPUT" | cut -d' ' -f1)"
