#!/usr/bin/env bash
# The prepared GPU check (issue 16): the CUDA tests, then benchmarks/gpu_throughput.py, in at most
# 8 minutes on one H200, no install from a registry, no network. Writes OUTDIR/gpu_check.log and
# ONE JSON of numbers, OUTDIR/gpu_check.json.
#
#   scripts/gpu_check.sh OUTDIR            # on the GPU machine (its python3, PYTHONPATH=src)
#   scripts/gpu_check.sh --dry-run OUTDIR  # the same steps at toy size on the CPU (CI runs it)
#
# PYTHON picks the interpreter (default python3). lightly (part (a)'s reference) comes from wheels
# carried in SPARSEHEAD_WHEELS (default shared/wheels) when that folder holds any; else part (a)
# records lightly as skipped. SPARSEHEAD_BENCH_DATA names the CIFAR-10 train folder for part (a)
# (default: the benchmark's own, ../shared/data/cifar10/train; synthetic JPEGs where it is absent).
set -uo pipefail
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:?usage: scripts/gpu_check.sh [--dry-run] OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG="$OUT/gpu_check.log"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WHEELS=${SPARSEHEAD_WHEELS:-shared/wheels}
{
    echo "gpu_check $(date -u +%FT%TZ) dry_run=$DRY python=$PY"
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/sparsehead-wheels \
            "$WHEELS"/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/sparsehead-wheels"
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
} >"$LOG" 2>&1

# 1. The CUDA tests (they skip, with their reason, on a machine without a GPU).
timeout 180 "$PY" -m pytest -q -rs -p no:cacheprovider tests/cuda >>"$LOG" 2>&1
TESTS_RC=$?
# 2. The throughput benchmark: (a) SimCLR vs lightly, (b) Barlow Twins ViT-S/16, (c) TFLOP/s, data share.
BENCH_ARGS=(--out "$OUT/gpu_check.json")
[ "$DRY" = 1 ] && BENCH_ARGS+=(--dry-run)
[ -n "${SPARSEHEAD_BENCH_DATA:-}" ] && BENCH_ARGS+=(--data "$SPARSEHEAD_BENCH_DATA")
timeout 270 "$PY" benchmarks/gpu_throughput.py "${BENCH_ARGS[@]}" >>"$LOG" 2>&1
BENCH_RC=$?
# The tests' outcome goes into the same JSON (one file of results).
"$PY" - "$OUT/gpu_check.json" "$LOG" "$TESTS_RC" "$BENCH_RC" <<'PYEOF' >>"$LOG" 2>&1
import json, re, sys
from pathlib import Path
from sparsehead.core.atomic import atomic_write_json
path, log, tests_rc, bench_rc = Path(sys.argv[1]), Path(sys.argv[2]).read_text(), int(sys.argv[3]), int(sys.argv[4])
results = json.loads(path.read_text()) if path.is_file() else {}
summary = [l for l in log.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", l)]
results["cuda_tests"] = {"exit_code": tests_rc, "summary": summary[0].strip("= ") if summary else "no summary"}
results["benchmark_exit_code"] = bench_rc
atomic_write_json(path, results)
PYEOF
echo "gpu_check: tests exit $TESTS_RC, benchmark exit $BENCH_RC; log $LOG, results $OUT/gpu_check.json"
# The tests' exit code 5 (nothing collected) cannot happen; skips (no GPU) exit 0.
[ "$TESTS_RC" = 0 ] && [ "$BENCH_RC" = 0 ]
