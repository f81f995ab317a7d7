#!/usr/bin/env bash
# The paper's own budget on a lent GPU machine, in one command (#29):
#
#   bash scripts/device-paper.sh                     # on the GPU machine, from the repository root
#   PROFILE=smoke DEVICE=cpu JOBS=2 bash scripts/device-paper.sh   # the same path on a CPU (a test runs it)
#
# It installs what it needs on a bare machine, runs `relcomp reproduce --profile $PROFILE --jobs
# $JOBS`, and copies the results file, the reports, the figures and a log under $OUT, which is all
# that comes back from such a machine. It is safe to run again: finished runs are reused and
# interrupted ones resume (the run folders live under $WORK, not $OUT).
#
# Settings (environment):
#   PROFILE     the profile (default paper)
#   JOBS        runs trained at once (default 10: every run of one seed of the paper profile; on one
#               GPU they share it, since one small CNN leaves it mostly idle)
#   DEVICE      auto, cpu or cuda (default auto)
#   THREADS     CPU threads of each run (default: the cores shared out among the jobs)
#   OUT         where the results go (default ./device-out; the device tool sets it)
#   WORK        where the run folders go (default runs)
#   PYTHON      the interpreter to use as it is when it already imports relcomp (a test sets it);
#               otherwise a venv is made at $VENV from $BASE_PYTHON (default python3), seeing its
#               site-packages, so a CUDA build of torch already on the machine is used
#   TORCH_SPEC  what pip installs when torch is missing (default torch>=2.6)
#   WHEELS      a folder of wheels to install from, for a machine without a package registry
#   MNIST_DIR   a folder with the four MNIST files (raw or .gz), for a machine without the internet
#   DATA_DIR    relcomp's cache for MNIST and pair sets (default $WORK/data)
#   TIMEOUT_S   stop training after this many seconds (default: none), leaving time to copy what
#               exists; a rerun resumes where it stopped
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-paper}
JOBS=${JOBS:-10}
DEVICE=${DEVICE:-auto}
OUT=${OUT:-device-out}
WORK=${WORK:-runs}
VENV=${VENV:-.venv-device}
DATA_DIR=${DATA_DIR:-$WORK/data}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/device-$PROFILE.log"
say() { echo "device-paper: $*" | tee -a "$LOG" >&2; }

pip_install() {
    if [ -n "${WHEELS:-}" ]; then "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$@"
    else "$PY" -m pip install -q "$@"; fi
}

# --- install --------------------------------------------------------------------------------------
if [ -n "${PYTHON:-}" ] && "$PYTHON" -c "import relcomp" 2>/dev/null; then
    PY=$PYTHON
    say "using $PY as it is (relcomp imports)"
else
    if [ ! -x "$VENV/bin/python" ]; then
        say "making $VENV from ${BASE_PYTHON:-python3} (with its site-packages)"
        "${BASE_PYTHON:-python3}" -m venv --system-site-packages "$VENV"
    fi
    PY=$VENV/bin/python
    if ! "$PY" -c "import torch" 2>/dev/null; then
        say "installing ${TORCH_SPEC:-torch>=2.6}"
        pip_install "${TORCH_SPEC:-torch>=2.6}"
    fi
    say "installing relcomp from this checkout"
    pip_install -e .
fi
RELCOMP=("$PY" -m relcomp)
"$PY" - <<'EOF' | tee -a "$LOG" >&2
import torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"device-paper: torch {torch.__version__}, GPU: {gpu}, CPU threads: {torch.get_num_threads()}")
EOF
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >> "$LOG" 2>&1 || true

# --- data -----------------------------------------------------------------------------------------
"${RELCOMP[@]}" data fetch --data-dir "$DATA_DIR" ${MNIST_DIR:+--from "$MNIST_DIR"} 2>&1 | tee -a "$LOG" >&2

# --- the study ------------------------------------------------------------------------------------
RUN_OUT="$WORK/reproduce-$PROFILE"
say "relcomp reproduce --profile $PROFILE --jobs $JOBS --device $DEVICE --out $RUN_OUT"
start=$(date +%s)
status=0
${TIMEOUT_S:+timeout --signal=INT "$TIMEOUT_S"} "${RELCOMP[@]}" reproduce --profile "$PROFILE" --jobs "$JOBS" \
    ${THREADS:+--threads "$THREADS"} --device "$DEVICE" --out "$RUN_OUT" --data-dir "$DATA_DIR" --quiet >> "$LOG" 2>&1 || status=$?
say "reproduce ended with status $status after $(( $(date +%s) - start )) s"

# --- what comes back ------------------------------------------------------------------------------
for f in results.json report.md report.html; do
    [ -f "$RUN_OUT/$f" ] && cp "$RUN_OUT/$f" "$OUT/$PROFILE-$f"
done
[ -d "$RUN_OUT/figures" ] && rm -rf "$OUT/$PROFILE-figures" && cp -r "$RUN_OUT/figures" "$OUT/$PROFILE-figures"
# each run's training summary, so that a study cut short still shows how far every run came
find "$RUN_OUT/runs" -name metrics.jsonl 2>/dev/null | while read -r m; do
    run=$(basename "$(dirname "$m")")
    mkdir -p "$OUT/$PROFILE-metrics" && cp "$m" "$OUT/$PROFILE-metrics/$run.jsonl"
done
exit "$status"
