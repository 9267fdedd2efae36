#!/usr/bin/env bash
# One device window, one command: install what the machine lacks, run the device check within
# its budget, then advance the costly eight's validate cells on hopper-medium-replay (from the
# checkpoints carried in) for the time left, and pack what comes back.
#
#   benchmarks/gpu_slice.sh OUT [WINDOW_S] [CHECK_S]
#
# WINDOW_S (default 480) bounds the whole script; CHECK_S (default 240) is the device check's
# budget (python -m benchmarks.device_check). Steps:
#
# 1. OUT/machine.txt: date, the commit (OFFRL_COMMIT if given: the device's checkout may not
#    be the sender's HEAD), the GPU, Python and library versions.
# 2. When `import mujoco, gymnasium` fails, every wheel of WHEELS_DIR (default wheels/, made by
#    tools/device_wheels.sh and carried; mujoco-mjx among them unless made with MJX=0) is
#    installed into /tmp/site, which goes first on PYTHONPATH. Where they import, nothing is.
# 3. JAX's persistent compilation cache in OFFRL_JAX_CACHE_DIR (default /tmp/offrl_jax_cache):
#    a second call on the same warm machine reads its programs instead of compiling them.
# 4. The device check into OUT/device_check/ (its JSON and Markdown).
# 5. The cells: each of ALGOS (default the costly eight) is one `offrl bench --profile validate
#    --tasks TASK --seeds SEEDS --algos ALGO --out RUN` process with an equal share of the time
#    left (time one does not use passes on), stopped at its deadline; a cell resumes from its
#    checkpoints in RUN and keeps the records of every evaluation it made. RUN (default
#    /tmp/window_run) starts as a copy of RESUME (a carried run directory such as a copy of
#    results/validate/hopper-medium-replay/three-seeds with its checkpoints/ and models/, links
#    resolved: `cp -rL`) when RUN does not exist yet, so a second call continues the first.
# 6. OUT holds at most six files (the device tool brings back eight, none deeper than two
#    folders): machine.txt, window.log, device_check.md and .json (copied as soon as the check
#    ends), window.tar.gz (RUN without checkpoints and models, every log, the device check) and
#    checkpoints.tar.gz when it is under 15 MB. The logs are written in WORK (a new folder in
#    /tmp) and reach OUT only in the archive.
#
# TINY=1 makes every step small enough for a CPU: the device check's --tiny, the tiny profile's
# networks and data, 20 updates per cell (its dataset is generated when missing).
# Environment: ALGOS, TASK (hopper-medium-replay), SEEDS (3), RESUME, RUN, WHEELS_DIR, PYTHON,
# OFFRL_DATA_DIR (where the task's data is found or made), BENCH_ARGS (extra `offrl bench`
# arguments), CHECK_ARGS (extra device check arguments).
set -u
out=${1:?usage: benchmarks/gpu_slice.sh OUT [WINDOW_S] [CHECK_S]}
window_s=${2:-480}
check_s=${3:-240}
start=$(date +%s)
end=$(( start + window_s - 20 ))  # 20 s kept for packing
python=${PYTHON:-python3}
algos=${ALGOS:-cql combo atac rambo armor mobile sacn edac}
task=${TASK:-hopper-medium-replay}
run=${RUN:-/tmp/window_run}
tiny=${TINY:-0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=${WORK:-$(mktemp -d /tmp/window_XXXXXX)}
mkdir -p "$work"
log="$work/window.log"
say() { echo "[$(( $(date +%s) - start )) s] $*" | tee -a "$log"; }
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OFFRL_JAX_CACHE_DIR=${OFFRL_JAX_CACHE_DIR:-/tmp/offrl_jax_cache}
# GPU memory taken as needed, not 75% up front: the device check's second process shares the
# card with the first (the rates of results/validate/gpu-slice were measured so too).
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export OFFRL_COMMIT=${OFFRL_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}

# 2. The wheels, where the simulators do not import.
if ! "$python" -c "import mujoco, gymnasium" >/dev/null 2>&1; then
  wheels=${WHEELS_DIR:-wheels}
  say "installing $(ls "$wheels"/*.whl 2>/dev/null | wc -l) wheels from $wheels"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$wheels"/*.whl >> "$log" 2>&1 || { say "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
else
  say "mujoco and gymnasium import: no install"
fi

# 1. The machine.
{
  date -u +%FT%TZ
  echo "commit $OFFRL_COMMIT (checkout's HEAD: $(git rev-parse HEAD 2>/dev/null || echo none))"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  echo "cpus $(nproc)"
  "$python" -c "import sys, jax, flax, mujoco; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'mujoco', mujoco.__version__, jax.devices())" 2>&1 | tail -1
} > "$work/machine.txt"
cat "$work/machine.txt" >> "$log"
cp "$work/machine.txt" "$out/"

pack() {
  cp "$log" "$out/"
  (cd "$work" && tar -czf "$out/window.tar.gz" --exclude=checkpoints --exclude=models \
     ./* -C "$(dirname "$run")" "$(basename "$run")" 2>/dev/null)
  if [ -d "$run/checkpoints" ]; then
    tar -czf "$out/checkpoints.tar.gz" -C "$run" checkpoints
    if [ "$(stat -c %s "$out/checkpoints.tar.gz")" -gt 15000000 ]; then
      say "checkpoints $(du -h "$out/checkpoints.tar.gz" | cut -f1): too large to come back"
      rm -f "$out/checkpoints.tar.gz"
    fi
  fi
}

# 4. The device check.
check_flags=(--budget-s "$check_s" --out "$work/device_check")
[ "$tiny" = 1 ] && check_flags+=(--tiny)
say "device check, budget $check_s s"
# shellcheck disable=SC2086
timeout --kill-after=10 $(( check_s + 120 )) "$python" -m benchmarks.device_check \
  "${check_flags[@]}" ${CHECK_ARGS:-} > "$work/device_check.log" 2>&1
say "device check: exit $?; $(grep -m1 -o 'poster.s table: .*h\*\*' "$work/device_check/device_check.md" 2>/dev/null)"
cp "$work"/device_check/device_check.* "$log" "$out/" 2>/dev/null

# 5. The cells, for the time left.
if [ "$tiny" = 1 ]; then
  profile=tiny; schedule=(--updates 20 --eval-every 10 --eval-episodes 2)
else
  profile=validate; schedule=()
fi
if [ ! -d "$run" ] && [ -n "${RESUME:-}" ]; then
  cp -rL "$RESUME" "$run" && say "resuming from $RESUME"
fi
mkdir -p "$run"
"$python" -m offrl_jax.cli data generate --env "${task%%-*}" --kinds "${task#*-}" \
  --profile "$profile" > "$work/data.log" 2>&1 || { say "data: $(tail -1 "$work/data.log")"; }
left=$(echo $algos | wc -w)
for algo in $algos; do
  share=$(( (end - $(date +%s)) / left ))
  left=$(( left - 1 ))
  if [ "$share" -lt 30 ]; then say "$algo: ${share} s left, not started"; continue; fi
  say "$algo: up to $share s"
  # shellcheck disable=SC2086
  timeout --signal=TERM --kill-after=15 "$share" "$python" -m offrl_jax.cli bench \
    --profile "$profile" --algos "$algo" --tasks "$task" --seeds "${SEEDS:-3}" \
    "${schedule[@]}" --out "$run" ${BENCH_ARGS:-} > "$work/$algo.log" 2>&1
  status=$?
  say "$algo: exit $status; $(tr '\r' '\n' < "$work/$algo.log" | grep -E 'eval [0-9]+/|Error|error' | tail -1)"
done
say "packing into $out"
pack
ls -l "$out" | tee -a "$log"
cp "$log" "$out/"
