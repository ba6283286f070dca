#!/usr/bin/env bash
# The release as a pip user gets it: build the wheel, install it into a fresh virtual environment (its
# dependencies from pip's index), and from an empty folder, with no source tree on sys.path, run
# `sparsehead --version`, `sparsehead configs`, `sparsehead pretrain --config cifar10_simclr --print-config`,
# the Python API on the demo (pretrain 3 steps, k-NN) and the API's docstring examples (scripts/api_examples.py).
#
#   scripts/wheel_check.sh               # PYTHON=... picks the interpreter that builds and makes the venv
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH

# Built from a copy of the files git tracks or would track: no stale build/ or egg-info of the checkout gets in.
echo "wheel_check: building the wheel"
mkdir "$WORK/tree"
git -C "$REPO" ls-files -z --cached --others --exclude-standard | (cd "$REPO" && xargs -0 cp --parents -P -t "$WORK/tree")
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/tree"
echo "wheel_check: ${SECONDS} s: installing $(basename "$WORK"/dist/*.whl) into a fresh venv"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet "$WORK"/dist/sparsehead-*.whl

echo "wheel_check: ${SECONDS} s: installed; running from an empty folder"
mkdir "$WORK/empty"
cd "$WORK/empty"
export PATH="$WORK/venv/bin:$PATH"
sparsehead --version
sparsehead configs >/dev/null
sparsehead pretrain --config cifar10_simclr --print-config >/dev/null
python - "$REPO" <<'PY'
import sys
from pathlib import Path

import sparsehead

repo = Path(sys.argv[1])
assert not Path(sparsehead.__file__).is_relative_to(repo), f"sparsehead imported from the source tree: {sparsehead.__file__}"
run = sparsehead.pretrain("demo", run_dir="r", **{"train.max_steps": 3, "train.progress": False})
assert isinstance(run, Path) and (run / "config.yaml").is_file(), run
record = sparsehead.evaluate("r", protocol="knn")
assert isinstance(record, dict) and 0.0 <= record["r"]["top1"] <= 1.0, record
print(f"wheel_check: sparsehead {sparsehead.__version__} from {Path(sparsehead.__file__).parent}: pretrain -> {run}, "
      f"k-NN top-1 {record['r']['top1']:.3f}")
PY
# The docstring examples, as written (the demo config, 3 steps each); read from stdin so that sys.path[0] is
# this empty folder.
python - examples <"$REPO/scripts/api_examples.py"
echo "wheel_check: passed in ${SECONDS} s"
