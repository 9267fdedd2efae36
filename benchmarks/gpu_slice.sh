#!/usr/bin/env bash
# "The GPU slice": the validate profile's costly algorithms on one GPU within a fixed wall-clock
# budget, then the device check, in one command (docs/validation.md, docs/speed.md).
#
#   benchmarks/gpu_slice.sh OUT [TRAIN_S] [CHECK_S]
#
# Each algorithm is its own `offrl bench --profile validate` process (one task, SEEDS vmapped
# seeds, UPDATES updates, an evaluation of 10 episodes every EVAL_EVERY updates). By default they
# run one after another, each with an equal share of what is left of TRAIN_S (time an algorithm
# does not use passes to the next). PARALLEL=1 starts them all at once instead: measured on an
# H200 (docs/speed.md), eight processes sharing the card ran far below a fair share of the
# one-process rate (ARMOR 36 updates/s with 3 seeds, against 1441 for one seed alone), so it
# is kept only for comparison. A process stops at its deadline whatever it has reached; the
# records of the evaluations it made are kept (appended one evaluation at a time), so an
# algorithm that did not finish has a learning curve up to where its time ended, and its log
# says how far it got. A second call into the same OUT resumes every cell from its checkpoint.
# Then `python -m benchmarks.device_check` measures clean updates/s for CHECK_S seconds.
# Everything small is packed into OUT/gpu_slice.tar.gz (checkpoints and fitted models left out),
# once after training and again after the device check; PACK_TO=DIR also copies it there.
#
# The dataset is made first (or found on disk: carry it to a machine without the shipped data
# cache, as $OFFRL_DATA_DIR/generated/PROFILE/TASK-gen1.hdf5).
#
# Environment: ALGOS (default: the eight costly ones), TASK (hopper-medium-replay), SEEDS (3),
# UPDATES (200000, the cheap algorithms' validate budget), EVAL_EVERY (10000), PROFILE
# (validate; `tiny` to try the script on a CPU), CHECK_ARGS (extra device_check arguments),
# BENCH_ARGS (extra `offrl bench` arguments, e.g. the papers' critics on a GPU:
# "--set sacn.agent.num_qs=200 --set edac.agent.num_qs=50"; the profile's 10 suit a CPU).
set -u
out=${1:?usage: benchmarks/gpu_slice.sh OUT [TRAIN_S] [CHECK_S]}
train_s=${2:-400}
check_s=${3:-110}
algos=${ALGOS:-cql combo atac rambo armor mobile sacn edac}
python=${PYTHON:-python3}
mkdir -p "$out"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # with PARALLEL=1, several processes share the card
{
  date -u +%FT%TZ
  git rev-parse HEAD 2>/dev/null
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  nproc
  "$python" -c "import sys, jax, flax, mujoco; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'mujoco', mujoco.__version__, jax.devices())"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

# the dataset first, once (a no-op where it is on disk): parallel processes must not race to make it
task=${TASK:-hopper-medium-replay}
"$python" -m offrl_jax.cli data generate --env "${task%%-*}" --kinds "${task#*-}" \
  --profile "${PROFILE:-validate}" > "$out/data.log" 2>&1 || { tail -5 "$out/data.log"; exit 1; }
# shellcheck disable=SC2086
bench() {  # bench ALGO SECONDS
  timeout --signal=TERM --kill-after=10 "$2" \
    "$python" -m offrl_jax.cli bench --profile "${PROFILE:-validate}" --algos "$1" \
      --tasks "$task" --seeds "${SEEDS:-3}" \
      --updates "${UPDATES:-200000}" --eval-every "${EVAL_EVERY:-10000}" \
      --out "$out/runs/$1" ${BENCH_ARGS:-} > "$out/$1.log" 2>&1
}
if [ "${PARALLEL:-0}" = 1 ]; then
  for algo in $algos; do bench "$algo" "$train_s" & done
  wait
else
  end=$(( $(date +%s) + train_s ))
  left=$(echo $algos | wc -w)
  for algo in $algos; do
    share=$(( (end - $(date +%s)) / left ))
    if [ "$share" -ge 5 ]; then bench "$algo" "$share"; else echo "$algo: no time left" > "$out/$algo.log"; fi
    left=$(( left - 1 ))
  done
fi
for algo in $algos; do
  printf '%s: ' "$algo"; tr '\r' '\n' < "$out/$algo.log" | grep -E 'eval [0-9]+/|Error|error' | tail -1
done

pack() {  # the small files so far into one archive (and a copy into $PACK_TO, if set)
  tar -czf "$out/gpu_slice.tar.gz" --exclude=checkpoints --exclude=models -C "$out" \
    $(cd "$out" && ls -d machine.txt runs device_check ./*.log 2>/dev/null)
  if [ -n "${PACK_TO:-}" ]; then cp "$out/gpu_slice.tar.gz" "$PACK_TO/"; fi
}
pack  # the training results are safe before the device check starts

# shellcheck disable=SC2086
timeout --kill-after=10 $((check_s + 120)) "$python" -m benchmarks.device_check \
  --budget-s "$check_s" --out "$out/device_check" ${CHECK_ARGS:-} > "$out/device_check.log" 2>&1
tail -5 "$out/device_check.log"
pack
ls -la "$out/gpu_slice.tar.gz"
