"""Dataset layer: load, validate, sample (D4RL HDF5 and Minari files, generated data)."""

from offrl_jax.data.d4rl import (
    read_d4rl_hdf5,
    read_d4rl_infos,
    read_d4rl_metadata,
    write_d4rl_hdf5,
)
from offrl_jax.data.dataset import (
    Dataset,
    episode_lengths,
    episode_returns,
    episodes_to_arrays,
    sample_batch,
)
from offrl_jax.data.locate import (
    cache_dir,
    d4rl_candidate_paths,
    find_task_dataset,
    generated_dataset_path,
    load_task_dataset,
)
from offrl_jax.data.minari import (
    read_minari,
    read_minari_id,
    read_minari_metadata,
    write_minari,
)
from offrl_jax.data.validate import DatasetError, derive_episode_ids, validate_arrays

__all__ = [
    "Dataset", "DatasetError", "cache_dir", "d4rl_candidate_paths", "derive_episode_ids",
    "episode_lengths", "episode_returns", "episodes_to_arrays", "find_task_dataset",
    "generated_dataset_path", "load_task_dataset", "read_d4rl_hdf5", "read_d4rl_infos",
    "read_d4rl_metadata", "read_minari", "read_minari_id", "read_minari_metadata", "sample_batch",
    "validate_arrays", "write_d4rl_hdf5", "write_minari",
]
