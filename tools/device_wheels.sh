#!/usr/bin/env bash
# Downloads the Python 3.12 x86-64 wheels that a GPU machine's image lacks (the simulators) or
# holds at other versions (the JAX libraries the suite is tested with), for installing there
# without a network: `benchmarks/gpu_slice.sh` installs every wheel of WHEELS_DIR when
# `import mujoco, gymnasium` fails there.
#
#   [MJX=0] tools/device_wheels.sh [DIR]     (default: wheels/, ignored by git)
#
# One version of each package, no dependencies pulled in (--no-deps): the list below names each
# one the suite needs beyond what such an image holds (numpy, scipy, absl-py, etils, jax,
# cloudpickle, typing-extensions are there). mujoco-studio and PyOpenGL, mujoco's viewer, are
# left out: the suite never imports them.
set -eu
dir=${1:-wheels}
python=${PYTHON:-python3}
packages=(
  mujoco==4.0.0 mujoco-core==4.0.0 glfw==2.11.0
  gymnasium==1.4.0 farama-notifications==0.0.6
  flax==0.12.8 optax==0.2.8 chex==0.1.92 orbax-checkpoint==0.12.8
)
# MJX (7.6 MiB with trimesh): the device check's MJX steps/s and the device evaluation backend.
# MJX=0 leaves it out, for a window that also carries a dataset (tools/window_carry.sh adds up
# what travels against the 64 MiB limit).
if [ "${MJX:-1}" = 1 ]; then packages+=(mujoco-mjx==3.17.0 trimesh==5.2.0); fi
rm -rf "$dir"
mkdir -p "$dir"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  platforms+=(--platform "$tag")
done
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$dir" "${packages[@]}"
ls -1 "$dir"
du -sh "$dir"
