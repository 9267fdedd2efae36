"""Device backend: the Gymnasium v4 locomotion tasks in MJX (``mujoco.mjx``), jittable, vmappable.

``make_mjx_env(name)`` loads the very ``MjModel`` that ``EnvSpec.make_gym_env()`` builds (same XML,
same options) and puts it on the device with ``mjx.put_model``; no brax. ``reset``, ``step`` and
``state_from_qpos_qvel`` act on one environment and are pure, so an evaluator can ``jax.vmap``
over seeds x episodes and ``jax.lax.scan`` over the 1000 steps inside one compiled program::

    env = make_mjx_env("hopper")
    states = jax.vmap(env.reset)(keys)                       # keys: (episodes, 2)
    states = jax.vmap(env.step)(states, actions)             # actions: (episodes, act_dim)

What each task reproduces (facts read from gymnasium 1.4.0's ``*_v4.py`` and ``mujoco_env.py``):

================  ===========  =======================  ===========================  =============
task              frame skip   reset noise (qpos/qvel)  ctrl cost / healthy reward   forward x
================  ===========  =======================  ===========================  =============
halfcheetah       5 (dt .05)   U(+-0.1) / 0.1 N(0,1)    0.1 / none, never ends       qpos[0]
hopper            4 (dt .008)  U(+-5e-3) / U(+-5e-3)    1e-3 / 1.0                   qpos[0]
walker2d          4 (dt .008)  U(+-5e-3) / U(+-5e-3)    1e-3 / 1.0                   qpos[0]
ant               5 (dt .05)   U(+-0.1) / 0.1 N(0,1)    0.5 / 1.0, contact 5e-4      torso xpos[0]
================  ===========  =======================  ===========================  =============

- Observation: qpos without x (ant: without x, y), then qvel; hopper and walker2d clip qvel to
  [-10, 10]; ant (``use_contact_forces=True``) appends ``clip(cfrc_ext, -1, 1)`` of *all* 14 bodies,
  world included (13 + 14 + 84 = 111; v4 keeps the world row, v5 drops it). As in gym, the
  observation after a reset has zero contact forces: ``set_state`` runs ``mj_forward`` only, and
  ``cfrc_ext`` is filled by ``mj_rnePostConstraint`` after each ``step``. The reset observation
  also shows Ant's quaternion as the noise left it, unnormalised.
- Reward: forward velocity (x after - x before) / dt, minus ``ctrl_cost_weight * sum(action**2)`` of
  the action *as given* (MuJoCo and MJX clamp ``ctrl`` to ``ctrlrange`` for the physics; gym does
  not clip the action in the cost), plus the healthy reward (paid on every step, the terminal one
  included, because ``terminate_when_unhealthy=True``), minus Ant's contact cost
  ``5e-4 * sum(clip(cfrc_ext, -1, 1)**2)``. Ant's x is the torso's ``xpos``, which after ``mj_step``
  holds the kinematics of the last RK4 stage; this backend leaves the same stage in ``data``.
- Termination: gym's own state checks, not the observation-based functions of
  ``offrl_jax.tasks.termination``: hopper's ``|state_vector()[2:]| < 100`` also bounds the unclipped
  qvel, which the clipped observation cannot see, and halfcheetah never terminates in gym (not even
  on NaN). Walker2d and ant agree with ``termination.walker2d_done`` / ``ant_done`` except on states
  whose joint angles pass 100 or turn non-finite while the height stays valid.
- ``done`` is sticky: after the terminal step the physics is frozen (``data`` and ``obs`` stay at
  the terminal state), ``reward`` is 0 and ``steps`` stops counting. Time limits are the caller's
  (``episode_length`` = 1000 steps).

How this backend runs MJX, and where it differs from the host (``mujoco`` 4.0 C, float64):

- Model options: none changed. ``mjx.put_model`` takes all four v4 models as they are (Newton
  solver, 100 iterations, 50 line-search iterations, pyramidal cones, the XML's contact pairs and
  margins). MJX evaluates every candidate contact pair each step (inactive ones are masked), which
  costs time, not accuracy.
- Forward pass: ``_forward`` runs the stages of ``mjx.forward`` (mujoco-mjx 3.17) and, between
  collision and constraint building, gives plane-capsule contacts MuJoCo's contact frame (first
  tangent = capsule axis projected on the plane). MJX 3.17 swaps in a world axis when a capsule is
  within 30 degrees of the plane normal, which turns the pyramidal friction cone about the normal:
  for Ant's feet this changed contact forces by about 5% and joint velocities by up to 0.9 in a
  single physics step. Planar models are unaffected either way. When mujoco-mjx is
  upgraded, check ``_forward`` against ``mjx.forward`` (the parity tests catch a mismatch).
- Integrator: hopper, walker2d and ant use RK4. MJX's ``rungekutta4`` traces the forward pass five
  times per physics step (its stage scan is unrolled); ``_rk4_step`` runs the same tableau as
  ``mj_RungeKutta`` (stages at 1/2, 1/2, 1; weights 1/6, 1/3, 1/3, 1/6; ``qacc_warmstart`` and
  ``data`` from the last stage) as a ``lax.scan`` over the four stages with its own
  ``mj_integratePos`` (slide/hinge add ``qvel * dt``; free/ball quaternions are normalised and
  rotated by the body-frame angular velocity). It equals ``mjx.step`` to 1e-15 in float64 and
  halves compile time. HalfCheetah uses semi-implicit Euler (``mjx.euler``).
- ``state_from_qpos_qvel`` (and so ``reset``) computes kinematics only, not a full forward pass:
  ``step`` starts with its own, as ``mj_step`` does, so results are unchanged, and a compiled
  reset-and-rollout program holds one copy of the constraint solver instead of two.
- Precision: MJX runs in float32 (unless ``jax_enable_x64``). Measured against gym from the same
  states with random actions (8 episodes; ``tests/test_mjx_env.py`` keeps tolerances above these):

  * hopper: obs within 2e-5 and rewards within 3e-6 over 50 steps, same termination step in every
    episode, 100-step returns of a fixed linear policy equal to 1e-3.
  * walker2d: obs within 5e-4 and rewards within 6e-5 over 50 steps, same terminations, 100-step
    returns within 0.07 (of about 22).
  * halfcheetah: obs within 2e-5 after one step and 6e-4 after 8, then its contacts amplify the
    float32 rounding: 2e-2 after 20 steps, order 1 after 40 (with ``jax_enable_x64`` the same code
    stays within 1e-6 of gym for 50 steps). Returns agree in distribution (mean difference 1.1,
    within its standard error, for an episode spread of 12).
  * ant: obs within 4e-6 after one step; once the feet touch the floor (step 2-3) the trajectories
    part (obs error 1 by step 8, counting clipped contact forces that switch between 0 and 1), in
    float64 as much as in float32. MuJoCo 4.0's compiled ``mj_step`` is the odd one out: RK4
    rebuilt in Python from ``mj_forward`` and ``mj_integratePos`` equals this backend to 1e-14
    (float64) and equals ``mj_step`` exactly for hopper and walker2d, but differs from ``mj_step``
    for Ant's free joint (about 6e-8 in qvel per physics step with constraints disabled, 1e-4 with
    contacts, which the stiff contacts then amplify). Statistics agree: random actions end 20 of 32
    MJX episodes and 23 of 32 gym episodes within 100 steps; linear-policy returns agree within
    their standard errors. Use the host backend where Ant scores must match gym episode by episode.
- Ant's contact forces come from ``mjx.rne_postconstraint`` (MJX's port of
  ``mj_rnePostConstraint``), read from ``data._impl.cfrc_ext`` (MJX keeps them there, not on
  ``Data``).
- Speed: MJX is for accelerators. On a 2-core CPU a vmapped hopper step runs at about 350
  env-steps/s at batch 1, 1000 at batch 16 and 500 at batch 128 (gym on the host: about 4600), and
  compiling a reset-and-rollout program takes 10-15 s per task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from offrl_jax.tasks.specs import get_env_spec

# RK4 Butcher tableau of mj_RungeKutta: stage s evaluates the dynamics at x0 + a_s * dt * k_{s-1};
# the step uses the weighted sum of the four stage derivatives.
_RK4_STAGE_FRACTIONS = np.array([0.0, 0.5, 0.5, 1.0])
_RK4_WEIGHTS = np.array([1.0, 2.0, 2.0, 1.0]) / 6.0


@flax.struct.dataclass
class MjxEnvState:
    """One environment's state; vmapped callers hold a leading batch axis on every leaf."""

    data: mjx.Data
    obs: jax.Array  # (obs_dim,) float32
    reward: jax.Array  # () float32, reward of the last step
    done: jax.Array  # () bool, True once the episode terminated (a fall); stays True
    steps: jax.Array  # () int32, environment steps simulated in this episode


HealthFn = Callable[[jax.Array, jax.Array], jax.Array]


def _hopper_healthy(qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    """Hopper-v4 ``is_healthy``: state_vector()[2:] in (-100, 100), z > 0.7, |angle| < 0.2."""
    state = jnp.concatenate([qpos, qvel])[2:]
    z, angle = qpos[1], qpos[2]
    return (
        jnp.all((state > -100.0) & (state < 100.0))
        & (z > 0.7)
        & (angle > -0.2)
        & (angle < 0.2)
    )


def _walker2d_healthy(qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    """Walker2d-v4 ``is_healthy``: 0.8 < z < 2 and -1 < angle < 1."""
    z, angle = qpos[1], qpos[2]
    return (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)


def _ant_healthy(qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    """Ant-v4 ``is_healthy``: finite state and 0.2 <= torso z <= 1."""
    finite = jnp.all(jnp.isfinite(qpos)) & jnp.all(jnp.isfinite(qvel))
    return finite & (qpos[2] >= 0.2) & (qpos[2] <= 1.0)


def _never_unhealthy(qpos: jax.Array, qvel: jax.Array) -> jax.Array:
    """HalfCheetah-v4 never terminates."""
    return jnp.array(True)


@dataclasses.dataclass(frozen=True)
class MjxTaskConfig:
    """The v4 constants of one task (gymnasium's defaults for the D4RL ids)."""

    frame_skip: int
    reset_noise_scale: float
    qvel_noise: str  # "uniform": U(-scale, scale); "normal": scale * N(0, 1)
    ctrl_cost_weight: float
    healthy_reward: float
    is_healthy: HealthFn
    excluded_qpos: int  # leading qpos entries (x, and y for ant) left out of the observation
    qvel_clip: float | None = None
    forward_body: str | None = None  # None: x is qpos[0]; else the body whose xpos[0] is x
    contact_cost_weight: float | None = None  # not None: contact forces in obs and cost


MJX_TASKS: dict[str, MjxTaskConfig] = {
    "halfcheetah": MjxTaskConfig(
        frame_skip=5, reset_noise_scale=0.1, qvel_noise="normal", ctrl_cost_weight=0.1,
        healthy_reward=0.0, is_healthy=_never_unhealthy, excluded_qpos=1,
    ),
    "hopper": MjxTaskConfig(
        frame_skip=4, reset_noise_scale=5e-3, qvel_noise="uniform", ctrl_cost_weight=1e-3,
        healthy_reward=1.0, is_healthy=_hopper_healthy, excluded_qpos=1, qvel_clip=10.0,
    ),
    "walker2d": MjxTaskConfig(
        frame_skip=4, reset_noise_scale=5e-3, qvel_noise="uniform", ctrl_cost_weight=1e-3,
        healthy_reward=1.0, is_healthy=_walker2d_healthy, excluded_qpos=1, qvel_clip=10.0,
    ),
    "ant": MjxTaskConfig(
        frame_skip=5, reset_noise_scale=0.1, qvel_noise="normal", ctrl_cost_weight=0.5,
        healthy_reward=1.0, is_healthy=_ant_healthy, excluded_qpos=2, forward_body="torso",
        contact_cost_weight=5e-4,
    ),
}


def _quat_integrate(quat: jax.Array, body_angvel: jax.Array, dt: jax.Array) -> jax.Array:
    """mju_quatIntegrate: normalise ``quat`` and rotate it by ``body_angvel * dt`` (body frame)."""
    speed = jnp.linalg.norm(body_angvel)
    safe_speed = jnp.where(speed > 0.0, speed, 1.0)
    axis = jnp.where(speed > 0.0, body_angvel / safe_speed, jnp.array([1.0, 0.0, 0.0]))
    half_angle = 0.5 * dt * speed
    rot = jnp.concatenate([jnp.cos(half_angle)[None], jnp.sin(half_angle) * axis])
    w0, v0 = quat[0], quat[1:]
    norm = jnp.linalg.norm(quat)
    w0, v0 = w0 / norm, v0 / norm
    w1, v1 = rot[0], rot[1:]
    w = w0 * w1 - jnp.dot(v0, v1)
    v = w0 * v1 + w1 * v0 + jnp.cross(v0, v1)
    return jnp.concatenate([w[None], v])


def _make_position_integrator(model: mujoco.MjModel) -> Callable:
    """mj_integratePos for this model's joints: ``integrate(qpos, qvel, dt) -> qpos``."""
    joints = [
        (int(model.jnt_type[j]), int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j]))
        for j in range(model.njnt)
    ]
    linear_q = [q for kind, q, _ in joints if kind in (mujoco.mjtJoint.mjJNT_HINGE,
                                                      mujoco.mjtJoint.mjJNT_SLIDE)]
    linear_v = [v for kind, _, v in joints if kind in (mujoco.mjtJoint.mjJNT_HINGE,
                                                      mujoco.mjtJoint.mjJNT_SLIDE)]
    linear_q, linear_v = np.array(linear_q, dtype=np.int32), np.array(linear_v, dtype=np.int32)
    free = [(q, v) for kind, q, v in joints if kind == mujoco.mjtJoint.mjJNT_FREE]
    ball = [(q, v) for kind, q, v in joints if kind == mujoco.mjtJoint.mjJNT_BALL]

    def integrate(qpos: jax.Array, qvel: jax.Array, dt: jax.Array) -> jax.Array:
        qpos = qpos.at[linear_q].add(dt * qvel[linear_v])
        for q, v in free:
            qpos = qpos.at[q:q + 3].add(dt * qvel[v:v + 3])
            quat = _quat_integrate(qpos[q + 3:q + 7], qvel[v + 3:v + 6], dt)
            qpos = qpos.at[q + 3:q + 7].set(quat)
        for q, v in ball:
            qpos = qpos.at[q:q + 4].set(_quat_integrate(qpos[q:q + 4], qvel[v:v + 3], dt))
        return qpos

    return integrate


class MjxEnv:
    """One v4 locomotion task in MJX; every method is pure and acts on a single environment."""

    def __init__(self, env_name: str):
        spec = get_env_spec(env_name)
        if env_name not in MJX_TASKS:
            raise NotImplementedError(
                f"no MJX backend for {env_name!r}; MJX tasks: {', '.join(sorted(MJX_TASKS))}. "
                "Use the host (gymnasium) backend."
            )
        config = MJX_TASKS[env_name]
        gym_env = spec.make_gym_env()
        try:
            host = gym_env.unwrapped
            model = host.model
            if host.frame_skip != config.frame_skip:
                raise ValueError(
                    f"{spec.gym_id}: gym frame_skip {host.frame_skip}, MJX_TASKS['{env_name}'] "
                    f"says {config.frame_skip}"
                )
            gym_obs_dim = host.observation_space.shape[0]
        finally:
            gym_env.close()
        if model.na:
            raise NotImplementedError(f"{spec.gym_id}: actuator activations (na > 0) unsupported")

        self.name = env_name
        self.config = config
        self.obs_dim = spec.obs_dim
        self.act_dim = spec.act_dim
        self.episode_length = spec.episode_length
        self.dt = float(model.opt.timestep * config.frame_skip)
        self.mj_model = model
        self.model = mjx.put_model(model)
        self._init_qpos = jnp.asarray(model.qpos0)
        self._init_qvel = jnp.zeros(model.nv)
        self._data_template = mjx.make_data(model)
        self._integrate_pos = _make_position_integrator(model)
        self._geom_type = jnp.asarray(model.geom_type)
        self._forward_body_id = (
            None if config.forward_body is None
            else mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, config.forward_body)
        )
        self._use_rk4 = model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
        if model.opt.integrator not in (mujoco.mjtIntegrator.mjINT_RK4,
                                        mujoco.mjtIntegrator.mjINT_EULER):
            raise NotImplementedError(f"{spec.gym_id}: integrator {model.opt.integrator}")

        obs = self._observation(self._data_template)
        if obs.shape != (self.obs_dim,) or gym_obs_dim != self.obs_dim:
            raise ValueError(
                f"{spec.gym_id}: observation has {obs.shape[0]} entries here and {gym_obs_dim} "
                f"in gym; ENV_SPECS['{env_name}'].obs_dim is {self.obs_dim}"
            )

    # -- public API -------------------------------------------------------------------------

    def reset(self, key: jax.Array) -> MjxEnvState:
        """A new episode: ``state_from_qpos_qvel(*self.reset_qpos_qvel(key))``."""
        return self.state_from_qpos_qvel(*self.reset_qpos_qvel(key))

    def reset_qpos_qvel(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """v4 ``reset_model`` noise: ``qpos0 + U(-s, s)``; ``qvel = U(-s, s)`` or ``s * N(0, 1)``.

        Returns qpos (nq,) and qvel (nv,); the physics is left to ``state_from_qpos_qvel``.
        """
        qpos_key, qvel_key = jax.random.split(key)
        scale = self.config.reset_noise_scale
        qpos = self._init_qpos + jax.random.uniform(
            qpos_key, self._init_qpos.shape, minval=-scale, maxval=scale)
        if self.config.qvel_noise == "uniform":
            qvel_noise = jax.random.uniform(
                qvel_key, self._init_qvel.shape, minval=-scale, maxval=scale)
        else:
            qvel_noise = scale * jax.random.normal(qvel_key, self._init_qvel.shape)
        return qpos, self._init_qvel + qvel_noise

    def state_from_qpos_qvel(self, qpos: jax.Array, qvel: jax.Array) -> MjxEnvState:
        """The state gym's ``set_state(qpos, qvel)`` makes, before any step; qpos (nq,), qvel (nv,).

        ``data`` holds qpos, qvel and their kinematics (``xpos``, ``xquat``, ``geom_xpos``, ...);
        the dynamics fields (``qacc``, contacts, constraint forces) stay zero until the first
        ``step``, which, like ``mj_step``, starts with a full forward pass of its own, so the step
        is the same as after gym's ``mj_forward``. Leaving that pass out here keeps a second copy
        of the constraint solver out of every compiled reset-and-rollout program. As after gym's
        reset, the solver warm start and the contact forces (Ant's observation) are zero; from a
        mid-episode gym state only those differ.
        """
        data = self._data_template.replace(
            qpos=jnp.asarray(qpos, self._data_template.qpos.dtype),
            qvel=jnp.asarray(qvel, self._data_template.qvel.dtype),
        )
        # mjx.kinematics writes normalised quaternions back into qpos; MuJoCo leaves qpos as set,
        # and gym's reset observation shows it unnormalised (the integrator normalises later).
        data = mjx.kinematics(self.model, data).replace(qpos=data.qpos)
        return MjxEnvState(
            data=data,
            obs=self._observation(data),
            reward=jnp.zeros((), jnp.float32),
            done=jnp.zeros((), bool),
            steps=jnp.zeros((), jnp.int32),
        )

    def step(self, state: MjxEnvState, action: jax.Array) -> MjxEnvState:
        """One v4 ``step``: ``frame_skip`` physics steps with ``ctrl = action`` (act_dim,)."""
        config = self.config
        action = jnp.asarray(action, self._data_template.ctrl.dtype)
        data = state.data.replace(ctrl=action)
        x_before = self._forward_position(data)
        data = jax.lax.fori_loop(0, config.frame_skip, lambda _, d: self._physics_step(d), data)
        if config.contact_cost_weight is not None:
            data = mjx.rne_postconstraint(self.model, data)
        x_after = self._forward_position(data)

        reward = (
            (x_after - x_before) / self.dt
            + config.healthy_reward
            - config.ctrl_cost_weight * jnp.sum(jnp.square(action))
        )
        if config.contact_cost_weight is not None:
            reward -= config.contact_cost_weight * jnp.sum(jnp.square(self._contact_forces(data)))
        terminated = ~config.is_healthy(data.qpos, data.qvel)

        was_done = state.done
        data = jax.tree_util.tree_map(lambda old, new: jnp.where(was_done, old, new),
                                      state.data, data)
        return MjxEnvState(
            data=data,
            obs=jnp.where(was_done, state.obs, self._observation(data)),
            reward=jnp.where(was_done, 0.0, reward).astype(jnp.float32),
            done=was_done | terminated,
            steps=state.steps + (~was_done).astype(jnp.int32),
        )

    # -- physics ------------------------------------------------------------------------------

    def _physics_step(self, data: mjx.Data) -> mjx.Data:
        """mj_step: forward dynamics, then the model's integrator."""
        if not self._use_rk4:
            return mjx.euler(self.model, self._forward(data))
        return self._rk4_step(data)

    def _forward(self, data: mjx.Data) -> mjx.Data:
        """``mjx.forward`` (the stages of mujoco-mjx 3.17) with MuJoCo's plane-capsule frames."""
        model = self.model
        data = mjx.kinematics(model, data)
        data = mjx.com_pos(model, data)
        data = mjx.camlight(model, data)
        data = mjx.tendon(model, data)
        data = mjx.crb(model, data)
        data = mjx.tendon_armature(model, data)
        data = mjx.factor_m(model, data)
        data = mjx.collision(model, data)
        data = self._align_capsule_contact_frames(data)
        data = mjx.make_constraint(model, data)
        data = mjx.transmission(model, data)
        data = mjx.sensor_pos(model, data)
        data = mjx.fwd_velocity(model, data)
        data = mjx.sensor_vel(model, data)
        data = mjx.fwd_actuation(model, data)
        data = mjx.fwd_acceleration(model, data)
        if data._impl.efc_J.size == 0:
            return data.replace(qacc=data.qacc_smooth)
        data = mjx.solve(model, data)
        return mjx.sensor_acc(model, data)

    def _align_capsule_contact_frames(self, data: mjx.Data) -> mjx.Data:
        """Plane-capsule contacts: first tangent = the capsule axis projected on the plane.

        MuJoCo (mjc_PlaneCapsule, then mju_makeFrame) always uses that projection. MJX 3.17 falls
        back to a world axis when the projection is shorter than 0.5 (a capsule within 30 degrees
        of the normal); the pyramidal friction cone then turns about the normal, and Ant's feet,
        which often meet the floor that steeply, get other friction forces than in MuJoCo.
        """
        contact = data._impl.contact
        if contact.geom.shape[0] == 0:
            return data
        plane_capsule = (
            (self._geom_type[contact.geom[:, 0]] == int(mujoco.mjtGeom.mjGEOM_PLANE))
            & (self._geom_type[contact.geom[:, 1]] == int(mujoco.mjtGeom.mjGEOM_CAPSULE))
        )
        normal = contact.frame[:, 0]
        axis = data.geom_xmat[contact.geom[:, 1], :, 2]
        projected = axis - normal * jnp.sum(normal * axis, axis=-1, keepdims=True)
        length = jnp.linalg.norm(projected, axis=-1, keepdims=True)
        defined = length > mujoco.mjMINVAL
        tangent = jnp.where(defined, projected / jnp.where(defined, length, 1.0),
                            jnp.array([1.0, 0.0, 0.0], projected.dtype))
        frame = jnp.stack([normal, tangent, jnp.cross(normal, tangent)], axis=1)
        frame = jnp.where(plane_capsule[:, None, None], frame, contact.frame)
        impl = data._impl.replace(contact=contact.replace(frame=frame))
        return data.replace(_impl=impl)

    def _rk4_step(self, data: mjx.Data) -> mjx.Data:
        """mj_step with RK4: four ``mjx.forward`` stages in one scan, then ``mj_advance``."""
        dt = self.model.opt.timestep
        qpos0, qvel0 = data.qpos, data.qvel

        def stage(carry, fraction_and_weight):
            data, stage_qvel, stage_qacc, qvel_sum, qacc_sum = carry
            fraction, weight = fraction_and_weight[0], fraction_and_weight[1]
            data = data.replace(
                qpos=self._integrate_pos(qpos0, stage_qvel, fraction * dt),
                qvel=qvel0 + fraction * dt * stage_qacc,
            )
            data = self._forward(data)
            carry = (data, data.qvel, data.qacc,
                     qvel_sum + weight * data.qvel, qacc_sum + weight * data.qacc)
            return carry, None

        zeros = jnp.zeros_like(qvel0)
        tableau = jnp.asarray(np.stack([_RK4_STAGE_FRACTIONS, _RK4_WEIGHTS], axis=1), qvel0.dtype)
        (data, _, _, qvel_sum, qacc_sum), _ = jax.lax.scan(
            stage, (data, zeros, zeros, zeros, zeros), tableau)
        # mj_advance: x0 + dt * weighted derivative; the last stage's qacc warm-starts the solver.
        return data.replace(
            qpos=self._integrate_pos(qpos0, qvel_sum, dt),
            qvel=qvel0 + dt * qacc_sum,
            qacc_warmstart=data.qacc,
            time=data.time + dt,
        )

    # -- observation --------------------------------------------------------------------------

    def _forward_position(self, data: mjx.Data) -> jax.Array:
        if self._forward_body_id is None:
            return data.qpos[0]
        return data.xpos[self._forward_body_id, 0]

    def _contact_forces(self, data: mjx.Data) -> jax.Array:
        """clip(cfrc_ext, -1, 1): (nbody, 6)."""
        return jnp.clip(data._impl.cfrc_ext, -1.0, 1.0)

    def _observation(self, data: mjx.Data) -> jax.Array:
        qvel = data.qvel
        if self.config.qvel_clip is not None:
            qvel = jnp.clip(qvel, -self.config.qvel_clip, self.config.qvel_clip)
        parts = [data.qpos[self.config.excluded_qpos:], qvel]
        if self.config.contact_cost_weight is not None:
            parts.append(self._contact_forces(data).ravel())
        return jnp.concatenate(parts).astype(jnp.float32)


def make_mjx_env(env_name: str) -> MjxEnv:
    """The MJX version of ``ENV_SPECS[env_name]``'s Gymnasium v4 task."""
    return MjxEnv(env_name)
