#!/usr/bin/env bash
# One device session's work in ONE command (issue 36, docs/gpu.md): on a lent GPU machine, with
# nothing to install from a network, within a wall budget:
#   1. lightly's and torchcodec's wheels from the device bundle (make device-bundle) into a temporary
#      target; CIFAR-10 unpacked from the bundle's tar.gz;
#   2. scripts/gpu_check.sh: the CUDA tests and benchmarks/gpu_throughput.py --regions (SimCLR against
#      lightly, the ViT's fraction of the bf16 peak, streamed ImageNet-size JPEGs' exposed data share);
#   3. the next cell of the GPU accuracy ledger (scripts/gpu_accuracy.py: docs/results/gpu.json's first
#      `todo` cell), its epochs sized from the SimCLR images/s just measured to the time left.
# Everything to bring back lands in OUTDIR, at most 8 files (what the device tool returns):
# session.log, session.json (what ran, for how long, each step's outcome), throughput_<part>_<gpu>_
# torch<version>_<date>.json for part simclr, vit and stream, NAME.cell.json and NAME.metrics.jsonl.
#
#   scripts/device_session.sh [--budget-s 560] [--bundle .device] [--skip-check] [--throughput F] OUTDIR
#   scripts/device_session.sh --dry-run --bundle DIR OUTDIR   # toy size on the CPU (.ci/run):
#       python3 scripts/device_bundle.py --toy 128 --out DIR first
#
# The device call a session makes (after `make device-bundle` in the checkout the session started in;
# one command may run 600 s: the budget leaves 40 s for the machine's Python start-up and the copy back):
#   run(command="scripts/device_session.sh $OUT", carry=[".device"], timeout_s=600)
# then commits what docs/gpu.md lists (the three throughput JSONs and the metrics under
# docs/results/gpu/, the cell through `python3 scripts/gpu_accuracy.py --record NAME.cell.json`).
# --skip-check gives the cell the whole budget (its epochs from --throughput, a SimCLR part's JSON
# of the same GPU, else a conservative guess). PYTHON picks the interpreter (default python3).
set -uo pipefail
DRY=0 BUDGET=560 BUNDLE=.device SKIP_CHECK=0 THROUGHPUT=
usage="usage: scripts/device_session.sh [--dry-run] [--budget-s S] [--bundle DIR] [--skip-check] [--throughput F] OUTDIR"
while [ $# -gt 1 ]; do
    case $1 in
        --dry-run) DRY=1; shift ;;
        --skip-check) SKIP_CHECK=1; shift ;;
        --budget-s) BUDGET=$2; shift 2 ;;
        --bundle) BUNDLE=$2; shift 2 ;;
        --throughput) THROUGHPUT=$(realpath "$2"); shift 2 ;;
        *) echo "device_session: unknown option $1; $usage" >&2; exit 2 ;;
    esac
done
OUT=${1:?$usage}
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "device_session: --budget-s $BUDGET: give whole seconds" >&2; exit 2; }
if [ ! -f "$BUNDLE/cifar10.tar.gz" ]; then
    echo "device_session: no $BUNDLE/cifar10.tar.gz: run make device-bundle, and carry .device in the run" >&2
    exit 2
fi
BUNDLE=$(cd "$BUNDLE" && pwd)
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sparsehead-session-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1
exec 3>&1 >>"$OUT/session.log" 2>&1 # the log keeps everything; the caller sees the steps and the summary
say() { echo "[$SECONDS s] $*"; echo "[$SECONDS s] $*" >&3; }
say "device_session $(date -u +%FT%TZ) dry_run=$DRY budget=${BUDGET}s bundle=$BUNDLE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

# 1. The wheels and the data.
if compgen -G "$BUNDLE/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
        "$BUNDLE"/wheels/*.whl || { say "the bundle's wheels did not install"; exit 1; }
    export PYTHONPATH="$WORK/site"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
tar -xzf "$BUNDLE/cifar10.tar.gz" -C "$WORK" || { say "the bundle's data did not unpack"; exit 1; }
"$PY" - "$WORK/setup.json" <<'PYEOF'
import json, sys
from sparsehead.data.decode import decoder_name
try:
    import lightly.loss, lightly.models.modules, lightly.transforms  # part (a)'s imports
    lightly = lightly.__version__
except ImportError as e:
    lightly = f"not importable: {e}"
json.dump({"lightly": lightly, "decoder": decoder_name()}, open(sys.argv[1], "w"))
PYEOF
say "set up: $(cat "$WORK/setup.json"), $(find "$WORK/cifar10" -type f | wc -l) CIFAR-10 files"
SETUP_S=$SECONDS

# 2. The check: the CUDA tests and the benchmark, each bounded (a fixed share of the budget).
CHECK_RC=skipped
if [ "$SKIP_CHECK" = 0 ]; then
    DRY_ARG=()
    [ "$DRY" = 1 ] && DRY_ARG=(--dry-run)
    GPU_CHECK_TESTS_S=$((BUDGET * 27 / 100)) GPU_CHECK_BENCH_S=$((BUDGET * 40 / 100)) GPU_CHECK_DECODE_S=$((BUDGET * 12 / 100)) \
        SPARSEHEAD_BENCH_DATA="$WORK/cifar10/train" PYTHON="$PY" scripts/gpu_check.sh "${DRY_ARG[@]}" "$WORK/check"
    CHECK_RC=$?
    mv "$WORK"/check/throughput_*.json "$OUT"/ 2>/dev/null
    echo "----- gpu_check.log" && cat "$WORK/check/gpu_check.log" && echo "----- end of gpu_check.log"
    say "check: exit $CHECK_RC; $(cat "$WORK/check/gpu_check.json" 2>/dev/null)"
    THROUGHPUT=$(compgen -G "$OUT/throughput_simclr_*.json" | head -1)
fi
CHECK_S=$SECONDS

# 3. The ledger's next cell, in the time left (20 s kept for what follows it).
LEFT=$((BUDGET - SECONDS - 20))
CELL_RC=skipped
if [ "$LEFT" -ge 120 ] || [ "$DRY" = 1 ]; then
    CELL_ARGS=(--data "$WORK/cifar10" --out "$OUT" --budget-s "$LEFT")
    [ -n "$THROUGHPUT" ] && CELL_ARGS+=(--throughput "$THROUGHPUT")
    [ "$DRY" = 1 ] && CELL_ARGS+=(--dry-run)
    say "cell: ${LEFT}s left"
    "$PY" scripts/gpu_accuracy.py "${CELL_ARGS[@]}"
    CELL_RC=$?
else
    say "cell: skipped, ${LEFT}s left (fewer than 120)"
fi

# What ran, for how long, and each step's outcome; the files must be what the device tool returns.
"$PY" - "$OUT" "$WORK" "$BUDGET" "$DRY" "$SETUP_S" "$CHECK_S" "$SECONDS" "$CHECK_RC" "$CELL_RC" <<'PYEOF' >"$WORK/summary" 2>&1
import json, sys
from pathlib import Path
out, work = Path(sys.argv[1]), Path(sys.argv[2])
budget, dry, setup_s, check_s, end_s = (int(v) for v in sys.argv[3:8])
check = work / "check" / "gpu_check.json"
cells = [json.loads(p.read_text()) for p in out.glob("*.cell.json")]
headline = {}
for part, key in (
    ("simclr", "ratio_sparsehead_over_best_lightly"),
    ("vit", "fraction_of_bf16_peak"),
    ("stream", "exposed_data_share"),
):
    for p in out.glob(f"throughput_{part}[_-]*.json"):
        headline[f"{p.name.split('_')[1]}: {key}"] = json.loads(p.read_text()).get(key)
session = {
    "budget_s": budget,
    "dry_run": bool(dry),
    "wall_s": {"setup": setup_s, "check": check_s - setup_s, "cell": end_s - check_s},
    **(json.loads((work / "setup.json").read_text()) if (work / "setup.json").is_file() else {}),
    "check_exit": sys.argv[8],
    "check": json.loads(check.read_text()) if check.is_file() else None,
    "headline": headline,
    "cell_exit": sys.argv[9],
    "cell": {k: cells[0][k] for k in ("name", "status", "epochs", "wall_s", "results")} if cells else None,
}
(out / "session.json").write_text(json.dumps(session, indent=1))
print(json.dumps(session, indent=1))
files = sorted(p.name for p in out.iterdir())
print(f"{len(files)} files in {out}: {' '.join(files)}")
if len(files) > 8:
    sys.exit(f"{len(files)} files in {out}: the device tool returns 8 at most")
PYEOF
LIST_RC=$?
cat "$WORK/summary" && cat "$WORK/summary" >&3
say "done in ${SECONDS}s of ${BUDGET}s: check exit $CHECK_RC, cell exit $CELL_RC; everything in $OUT"
[ "$LIST_RC" = 0 ] && [[ $CHECK_RC =~ ^(0|skipped)$ ]] && [[ $CELL_RC =~ ^(0|skipped)$ ]]
