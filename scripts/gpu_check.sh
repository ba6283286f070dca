#!/usr/bin/env bash
# The prepared GPU check (issues 16, 36): the CUDA tests, then benchmarks/gpu_throughput.py --regions,
# no install, no network. scripts/device_session.sh runs it on a lent GPU machine (with lightly's
# wheels and CIFAR-10 from the device bundle, docs/gpu.md). Writes into OUTDIR: gpu_check.log, the
# benchmark's JSON per part (throughput_<part>_<gpu>_torch<version>_<date>.json) and gpu_check.json
# (the tests' outcome, the benchmark's exit code, the parts' file names).
#
#   scripts/gpu_check.sh OUTDIR            # on the GPU machine (its python3, PYTHONPATH=src)
#   scripts/gpu_check.sh --dry-run OUTDIR  # the same steps at toy size on the CPU
#
# PYTHON picks the interpreter (default python3). SPARSEHEAD_BENCH_DATA names the CIFAR-10 train
# folder of part (a) (default: the benchmark's own, ../shared/data/cifar10/train; synthetic JPEGs
# where it is absent). GPU_CHECK_TESTS_S, GPU_CHECK_BENCH_S and GPU_CHECK_DECODE_S bound the steps (default 180, 270, 90 s).
set -uo pipefail
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:?usage: scripts/gpu_check.sh [--dry-run] OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG="$OUT/gpu_check.log"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
    echo "gpu_check $(date -u +%FT%TZ) dry_run=$DRY python=$PY"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
} >"$LOG" 2>&1

# 1. The CUDA tests, tests/cuda and those marked cuda beside the CPU tests of the same thing (they skip, with
# their reason, on a machine without a GPU); -v puts each test's outcome in the log as it ends, should the time
# limit stop the run.
timeout "${GPU_CHECK_TESTS_S:-180}" "$PY" -m pytest -v -rs -p no:cacheprovider -m cuda tests/cuda tests/training/test_collapse_thread.py >>"$LOG" 2>&1
TESTS_RC=$?
# 2. The throughput benchmark: (a) SimCLR vs lightly, (b) Barlow Twins ViT-S/16, (c) TFLOP/s and data
# share, (d) per region, (e) streamed ImageNet-size JPEGs; one JSON per part, each written when done.
BENCH_ARGS=(--out-dir "$OUT" --regions)
[ "$DRY" = 1 ] && BENCH_ARGS+=(--dry-run)
[ -n "${SPARSEHEAD_BENCH_DATA:-}" ] && BENCH_ARGS+=(--data "$SPARSEHEAD_BENCH_DATA")
timeout "${GPU_CHECK_BENCH_S:-270}" "$PY" benchmarks/gpu_throughput.py "${BENCH_ARGS[@]}" >>"$LOG" 2>&1
BENCH_RC=$?
# (e) again with the JPEGs decoded on the GPU (data.decode=device): a file of its own beside (e)'s.
DECODE_ARGS=(--out-dir "$OUT" --parts stream --stream-data data.decode=device)
[ "$DRY" = 1 ] && DECODE_ARGS+=(--dry-run)
timeout "${GPU_CHECK_DECODE_S:-90}" "$PY" benchmarks/gpu_throughput.py "${DECODE_ARGS[@]}" >>"$LOG" 2>&1
DECODE_RC=$?
[ "$BENCH_RC" = 0 ] && BENCH_RC=$DECODE_RC
# The tests' outcome and the parts written, in one JSON.
"$PY" - "$OUT" "$LOG" "$TESTS_RC" "$BENCH_RC" <<'PYEOF' >>"$LOG" 2>&1
import re, sys
from pathlib import Path
from sparsehead.core.atomic import atomic_write_json
out, log, tests_rc, bench_rc = Path(sys.argv[1]), Path(sys.argv[2]).read_text(), int(sys.argv[3]), int(sys.argv[4])
summary = [l for l in log.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", l)]
atomic_write_json(out / "gpu_check.json", {
    "cuda_tests": {"exit_code": tests_rc, "summary": summary[0].strip("= ") if summary else "no summary"},
    "benchmark_exit_code": bench_rc,
    "parts": sorted(p.name for p in out.glob("throughput_*.json")),
})
PYEOF
echo "gpu_check: tests exit $TESTS_RC, benchmark exit $BENCH_RC; log $LOG, results $OUT/gpu_check.json"
# The tests' exit code 5 (nothing collected) cannot happen; skips (no GPU) exit 0.
[ "$TESTS_RC" = 0 ] && [ "$BENCH_RC" = 0 ]
