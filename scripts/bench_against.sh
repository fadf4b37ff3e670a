#!/usr/bin/env bash
# Compare this checkout's HEAD with another commit (default b69e331, release 1.0.0): serve and work, alternating,
# two rounds, each side an exported tree driven by HEAD's benchmark scripts through BENCH_APP.
# Usage: scripts/bench_against.sh [BASE_COMMIT]   (prints the tables; each script also writes bench-results/)
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-b69e331}"
work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT
mkdir "$work_dir/base" "$work_dir/head"
git archive "$base" | tar -x -C "$work_dir/base"
git archive HEAD | tar -x -C "$work_dir/head"
python=".venv/bin/python"
for round in 1 2; do
    for side in base head; do
        app="$(pwd)/$python $work_dir/$side/directory_api.py"
        echo "=== round $round, $side, serve"
        BENCH_APP="$app" flock /tmp/bench.lock "$python" scripts/bench_serve.py --targets serve-1,serve-auto \
            --connections 16,64 --requests 2000 --repeats 1
        echo "=== round $round, $side, work"
        BENCH_APP="$app" flock /tmp/bench.lock "$python" scripts/bench_work.py --drains work --queues sqs \
            --workers 1 --emails off --messages 5000 --repeats 1
    done
done
