"""The provenance helpers under their former module name, for the data-generation code that
still imports them from here (``offrl_jax.generation.export`` and ``.generate``). New code
imports :mod:`offrl_jax.results.provenance`; this module goes once those two do."""

from offrl_jax.results.provenance import device_description, git_commit, library_versions

__all__ = ["device_description", "git_commit", "library_versions"]
