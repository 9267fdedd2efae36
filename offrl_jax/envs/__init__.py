"""Environment backends: Gymnasium v4 on the host (the reference) and MJX on the device."""

from offrl_jax.envs.host import HostVectorEnv

__all__ = ["HostVectorEnv"]
