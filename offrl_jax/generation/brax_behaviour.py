"""The behaviour SAC trained on the device by brax's SAC, on the MJX reproductions of the tasks.

``offrl data train-behaviour --backend device`` runs :func:`train_behaviour_device`:
``brax.training.agents.sac.train`` (brax's own loop: ``num_envs`` environments stepped together
and the updates in one compiled program, on one accelerator) on
:class:`offrl_jax.envs.brax_env.BraxEnv`, with the profile's budget, warm-up, evaluation schedule,
networks, rates and batch size. It writes the run directory the host path writes (the saved
tree of :class:`offrl_jax.generation.behaviour._RunFiles`: recipe and one actor per
evaluation), so ``offrl data export-behaviour`` chooses and writes the snapshots
(``actor_XXXXXXX.npz``) as for a host run. The datasets are still collected on the Gymnasium v4
environments from those snapshots.

The actor is exactly ours. brax's ``make_sac_networks`` builds a ReLU MLP whose last layer gives
the mean and a pre-softplus scale (``NormalTanhDistribution``: std = softplus(x) + 0.001); the
network factory here keeps brax's MLP and replaces the distribution with ours
(:class:`ClippedLogStdTanhNormal`: std = exp(clip(x, -5, 2)), as
:class:`offrl_jax.networks.TanhGaussianPolicy`), with flax's default initialisers (LeCun normal
kernels, zero biases) for the actor and both critics. brax's parameters then map one to one onto
ours (``hidden_i`` -> ``MLP_0/Dense_i``, :func:`actor_params_from_brax`): same means, same
standard deviations, same sample for the same key.

What differs from the host SAC (:mod:`offrl_jax.generation.behaviour`), all brax's choices:

- Physics: MJX in float32, not MuJoCo's float64 (:mod:`offrl_jax.envs.mjx_env` says how far they
  agree; hopper and walker2d closely, halfcheetah and ant statistically).
- Target entropy: ``-act_dim / 2`` (brax's ``make_losses``), not ``-act_dim``: the policy keeps
  more entropy.
- Warm-up: the first ``start_steps`` transitions are collected by the untrained actor (brax's
  prefill), not by uniform actions. The medium-replay schedule still regenerates them as uniform.
- Collection: ``num_envs`` environments step together, then ``num_envs`` updates run (one update
  per environment step, as D4RL's recipe); episodes restart from each environment's first start
  state (brax's ``AutoResetWrapper``), not from fresh reset noise.
- Time-outs: transitions at the 1000-step limit are left out of the critic loss; the host
  bootstraps them.
- Update order: temperature, critics, then actor from the critics before their update; the host
  updates the critics first, then actor and temperature.
- Evaluations: ``eval_episodes`` sampled-action episodes in MJX (the host path evaluates on
  gym); ``export-behaviour`` re-evaluates its candidates on gym either way.
- Not resumable: brax's loop keeps its critics, optimizer states and replay buffer on the device
  and returns the actor alone. An interrupted run starts again; a finished one is read back. The
  saved SAC state holds the final actor with freshly initialised critics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from offrl_jax.generation.behaviour import BehaviourRun, PolicyCheckpoint, _RunFiles
from offrl_jax.generation.data_profiles import DataProfile
from offrl_jax.networks import LOG_STD_MAX, LOG_STD_MIN
from offrl_jax.parts import sac
from offrl_jax.tasks import get_env_spec

try:
    import brax
    from brax.training import distribution as brax_distribution
    from brax.training import networks as brax_networks
    from brax.training import types as brax_types
    from brax.training.agents.sac import networks as brax_sac_networks

    HAVE_BRAX = True
except ImportError:
    HAVE_BRAX = False

BRAX_MISSING = ("`--backend device` trains with brax, an optional extra: "
                "pip install -e '.[brax]'")


def _require_brax() -> None:
    if not HAVE_BRAX:
        raise ImportError(BRAX_MISSING)


if HAVE_BRAX:

    class ClippedLogStdTanhNormal(brax_distribution.NormalTanhDistribution):
        """brax's ``NormalTanhDistribution`` with our std, ``exp(clip(log_std, -5, 2))``.

        brax's log-probability and tanh correction equal ours
        (:func:`offrl_jax.networks.tanh_gaussian_log_prob`), so only the scale changes."""

        def create_dist(self, parameters):
            loc, log_std = jnp.split(parameters, 2, axis=-1)
            scale = jnp.exp(jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))
            return brax_distribution._NormalDistribution(loc=loc, scale=scale)


def make_sac_networks(observation_size: int, action_size: int,
                      preprocess_observations_fn=None, hidden_layer_sizes=(256, 256),
                      num_qs: int = 2):
    """brax ``SACNetworks`` with our actor's distribution and flax's default initialisers.

    The signature is brax's ``network_factory``; its defaults are what brax's checkpoints record.
    """
    _require_brax()
    from flax import linen

    preprocess = preprocess_observations_fn or brax_types.identity_observation_preprocessor
    kernel_init = jax.nn.initializers.lecun_normal()
    policy_network = brax_networks.make_policy_network(
        2 * action_size, observation_size, preprocess_observations_fn=preprocess,
        hidden_layer_sizes=tuple(hidden_layer_sizes), activation=linen.relu,
        kernel_init=kernel_init)
    q_network = brax_networks.make_q_network(
        observation_size, action_size, preprocess_observations_fn=preprocess,
        hidden_layer_sizes=tuple(hidden_layer_sizes), activation=linen.relu, n_critics=num_qs,
        kernel_init=kernel_init)
    return brax_sac_networks.SACNetworks(
        policy_network=policy_network, q_network=q_network,
        parametric_action_distribution=ClippedLogStdTanhNormal(action_size))


def actor_params_from_brax(policy_params) -> dict:
    """brax's policy MLP (``{"params": {"hidden_i": {kernel, bias}}}``) as our
    :class:`~offrl_jax.networks.TanhGaussianPolicy` parameters
    (``{"params": {"MLP_0": {"Dense_i": ...}}}``), float32 arrays."""
    layers = policy_params["params"]
    names = [f"hidden_{i}" for i in range(len(layers))]
    if sorted(layers) != sorted(names):
        raise ValueError(f"brax policy parameters: expected layers {names} (an MLP without "
                         f"layer norm), found {sorted(layers)}")
    tree = {"params": {"MLP_0": {f"Dense_{i}": {"kernel": layers[name]["kernel"],
                                                "bias": layers[name]["bias"]}
                                 for i, name in enumerate(names)}}}
    # Through a tree map, as every actor a training step returns: dict keys in sorted order,
    # which the digests and the exported files' bytes depend on.
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, jnp.float32), tree)


def initial_policy_params(networks, seed: int):
    """The actor ``brax.training.agents.sac.train(seed=seed)`` starts from (and collects its
    warm-up with): brax 0.14's key derivation (``wrap_env=True``), checked against
    brax's own initial state by ``tests/test_brax_env.py``."""
    rng = jax.random.PRNGKey(seed)
    rng, _ = jax.random.split(rng)  # brax's key for domain randomisation
    global_key, _ = jax.random.split(rng)
    policy_key, _ = jax.random.split(global_key)
    return networks.policy_network.init(policy_key)


def _device_put_replicated(tree, devices):
    """What ``jax.device_put_replicated`` did: ``tree`` stacked once per device, one row on each
    device (jax's documented replacement, ``device_put`` with a sharding over the devices). The
    mesh axis is named ``i`` as brax's ``pmap`` axis, so that the actor brax evaluates carries
    the same sharding before training as after, and its evaluation compiles once for both."""
    mesh = jax.sharding.Mesh(np.asarray(devices), ("i",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("i"))
    return jax.device_put(jax.tree_util.tree_map(
        lambda leaf: jnp.stack([jnp.asarray(leaf)] * len(devices)), tree), sharding)


@contextlib.contextmanager
def _brax_jax_compat():
    """brax 0.14.2's SAC calls ``jax.device_put_replicated``, which jax 0.10 removed (brax issue
    671, open); this lends jax the replacement above while brax trains, and only where jax lacks
    the function."""
    try:
        jax.device_put_replicated  # noqa: B018
        missing = False
    except AttributeError:
        missing = True
    if missing:
        jax.device_put_replicated = _device_put_replicated
    try:
        yield
    finally:
        if missing:
            del jax.device_put_replicated


@dataclasses.dataclass(frozen=True)
class DeviceSchedule:
    """How brax's loop maps onto the profile: ``num_evals`` evaluations (the first before any
    update) every ``eval_every`` env steps after the ``start_steps`` warm-up."""

    num_timesteps: int
    start_steps: int
    eval_every: int
    num_envs: int

    @property
    def num_evals(self) -> int:
        return (self.num_timesteps - self.start_steps) // self.eval_every + 1

    @classmethod
    def of(cls, env: str, profile: DataProfile, num_envs: int) -> DeviceSchedule:
        schedule = cls(num_timesteps=profile.steps_for(env), start_steps=profile.start_steps,
                       eval_every=profile.segment_steps * profile.eval_every_segments,
                       num_envs=num_envs)
        for name in ("start_steps", "eval_every"):
            if getattr(schedule, name) % num_envs:
                raise ValueError(f"profile {profile.name!r}: {name} = {getattr(schedule, name)} "
                                 f"is not a multiple of num_envs = {num_envs}; choose a "
                                 f"num_envs that divides it")
        if (schedule.num_timesteps - schedule.start_steps) % schedule.eval_every or \
                schedule.num_timesteps <= schedule.start_steps:
            raise ValueError(f"profile {profile.name!r}: {env} budget {schedule.num_timesteps} "
                             f"minus start_steps {schedule.start_steps} must be a positive "
                             f"multiple of the evaluation interval {schedule.eval_every}")
        return schedule


def train_behaviour_device(env: str, profile: DataProfile, seed: int,
                           work_dir: str | Path, num_envs: int = 100,
                           episode_length: int | None = None,
                           progress: bool = True) -> BehaviourRun:
    """Train the behaviour SAC for ``env`` with brax's SAC on the default JAX device.

    Writes ``work_dir`` (read by ``offrl data export-behaviour``) and brax's own checkpoints
    under ``work_dir/brax_checkpoints/`` (``brax.training.agents.sac.checkpoint.load_policy``
    with :func:`make_sac_networks` reads them). ``episode_length`` (default: the task's 1000
    steps) is for tests. A finished run with the same recipe is read back, not retrained.
    """
    _require_brax()
    from brax.training import checkpoint as brax_checkpoint
    from brax.training.agents.sac import train as brax_sac

    from offrl_jax.envs.brax_env import BraxEnv

    spec = get_env_spec(env)
    schedule = DeviceSchedule.of(env, profile, num_envs)
    episode_length = episode_length or spec.episode_length
    config = profile.sac
    if config.actor_lr != config.critic_lr or config.alpha_lr != 3e-4:
        raise ValueError(f"profile {profile.name!r}: brax's SAC takes one learning rate for "
                         f"actor and critics and 3e-4 for the temperature; found actor_lr "
                         f"{config.actor_lr}, critic_lr {config.critic_lr}, alpha_lr "
                         f"{config.alpha_lr}")
    if config.init_alpha != 1.0 or not config.backup_entropy:
        raise ValueError(f"profile {profile.name!r}: brax's SAC starts at alpha = 1 with the "
                         f"entropy term in the TD target; found {config}")
    recipe = {"env": env, "profile": profile.name, "seed": seed,
              "backend": "device: brax.training.agents.sac on offrl_jax.envs.brax_env",
              "brax": brax.__version__, "num_envs": num_envs, "episode_length": episode_length,
              "num_timesteps": schedule.num_timesteps, "start_steps": schedule.start_steps,
              "eval_every": schedule.eval_every, "eval_episodes": profile.eval_episodes,
              "sac": repr(config), "batch_size": profile.batch_size}
    files = _RunFiles(work_dir)
    agent = sac.Agent(config, spec.obs_dim, spec.act_dim)
    saved = files.load_state(agent.init(jax.random.PRNGKey(0)))
    if saved is not None:
        if saved["recipe"] != recipe:
            raise ValueError(f"{files.state_path}: key 'recipe': expected {recipe}, found "
                             f"{saved['recipe']}; use another work directory")
        checkpoints = [PolicyCheckpoint(int(c["env_steps"]), float(c["mean_return"]),
                                        c["actor"]) for c in saved["checkpoints"]]
        return BehaviourRun(env, checkpoints, {}, saved["sac_state"], agent)

    network_factory = functools.partial(make_sac_networks,
                                        hidden_layer_sizes=tuple(config.hidden_dims),
                                        num_qs=config.num_qs)
    returns: dict[int, float] = {}

    def record(step: int, metrics: dict) -> None:
        if "eval/episode_reward" in metrics:
            returns[int(step)] = float(metrics["eval/episode_reward"])
            if progress:
                print(f"{env} env_steps={step} eval return {returns[int(step)]:.1f}", flush=True)

    checkpoint_dir = (Path(work_dir) / "brax_checkpoints").resolve()
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # an interrupted attempt's, uncommitted
    with _brax_jax_compat():
        brax_sac.train(
            environment=BraxEnv(env), num_timesteps=schedule.num_timesteps,
            episode_length=episode_length, num_envs=num_envs,
            num_eval_envs=profile.eval_episodes, learning_rate=config.actor_lr,
            discounting=config.gamma, seed=seed, batch_size=profile.batch_size,
            num_evals=schedule.num_evals, normalize_observations=False, max_devices_per_host=1,
            tau=config.tau, min_replay_size=schedule.start_steps,
            max_replay_size=schedule.num_timesteps, grad_updates_per_step=num_envs,
            deterministic_eval=False, network_factory=network_factory, progress_fn=record,
            checkpoint_logdir=str(checkpoint_dir))

    networks = network_factory(spec.obs_dim, spec.act_dim)
    checkpoints = [PolicyCheckpoint(schedule.start_steps, returns[0], actor_params_from_brax(
        initial_policy_params(networks, seed)))]
    for path in sorted(p for p in checkpoint_dir.iterdir() if p.name.isdigit()):
        step = int(path.name)
        _, policy_params = brax_checkpoint.load(path)
        checkpoints.append(PolicyCheckpoint(step, returns[step],
                                            actor_params_from_brax(policy_params)))
    expected = [schedule.start_steps + k * schedule.eval_every
                for k in range(schedule.num_evals)]
    if [c.env_steps for c in checkpoints] != expected:
        raise RuntimeError(f"{checkpoint_dir}: brax checkpoints at env steps "
                           f"{[c.env_steps for c in checkpoints[1:]]}, expected {expected[1:]}")
    state = agent.init(jax.random.PRNGKey(seed)).replace(actor_params=checkpoints[-1].actor_params)
    files.save_state(recipe, -(-schedule.num_timesteps // profile.segment_steps), state,
                     checkpoints)
    return BehaviourRun(env, checkpoints, {}, state, agent)


def actor_from_brax_checkpoint(path: str | Path) -> dict:
    """Our actor parameters from one of brax's SAC checkpoint directories."""
    _require_brax()
    from brax.training import checkpoint as brax_checkpoint

    _, policy_params = brax_checkpoint.load(Path(path).resolve())
    return jax.tree_util.tree_map(np.asarray, actor_params_from_brax(policy_params))
