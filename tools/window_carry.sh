#!/usr/bin/env bash
# Assembles what a device window carries beside the working tree (benchmarks/gpu_slice.sh):
# window/data/ (the task's dataset, as $OFFRL_DATA_DIR/generated/PROFILE/TASK-gen1.hdf5) and
# window/run/ (a copy of the validate run to advance, links resolved, with its checkpoints/ and
# models/ where they exist), then prints the sizes against the 64 MiB the tree may weigh.
#
#   tools/window_carry.sh [RUN_DIR] [DATA_FILE]
#
# RUN_DIR: default results/validate/hopper-medium-replay/three-seeds; DATA_FILE: default the
# data cache's generated/validate/hopper-medium-replay-gen1.hdf5. window/ and wheels/ are
# ignored by git.
set -eu
run=${1:-results/validate/hopper-medium-replay/three-seeds}
data_dir=${OFFRL_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/offrl_jax}
data=${2:-$data_dir/generated/validate/hopper-medium-replay-gen1.hdf5}
rm -rf window
mkdir -p window/data/generated/validate
cp "$data" window/data/generated/validate/
cp -rL "$run" window/run 2>/dev/null || cp -r "$run" window/run
[ -d window/run/checkpoints ] || echo "note: $run has no checkpoints/: its cells train from the start"
[ -d window/run/models ] || echo "note: $run has no models/: model-based cells fit their models first"
# What travels: the tracked and untracked-but-not-ignored files, and the carried folders.
{ git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null
  find window wheels -type f -printf "%s\n" 2>/dev/null; } |
  awk '{ s += $1 } END { printf "the tree with window/ and wheels/: %.1f MiB of the 64 MiB a call carries%s\n", s / 1048576, (s > 64 * 1048576) ? " (over: make the wheels with MJX=0, or carry less)" : "" }'
