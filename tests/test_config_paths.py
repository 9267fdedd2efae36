"""Configs composed from parts and addressed by path: the paths, overrides by path for one
algorithm or every algorithm that has the part, and clear errors (before any data step) for a
path that does not exist or a value of the wrong kind."""

import dataclasses

import pytest

from offrl_jax.algorithms.base import ConfigError, config_paths, replace_path
from offrl_jax.algorithms.registry import ALGORITHMS, get_algorithm
from offrl_jax.cli import main
from offrl_jax.parts import dynamics, sac
from offrl_jax.tasks import get_env_spec
from offrl_jax.training import plan, profiles, runner
from offrl_jax.training.cli import parse_overrides

HOPPER = get_env_spec("hopper")


def test_paths_name_every_setting_and_each_part_declares_its_own():
    paths = get_algorithm("mopo").paths()
    assert paths["rollouts.horizon"] == 5 and paths["penalty_coef"] == 1.0
    assert paths["agent.actor_lr"] == 1e-4 and paths["dynamics.members"] == 7
    # The SAC settings are declared once, in the SAC part: every SAC-based algorithm has the
    # same agent paths, and none repeats one of them at its top level.
    agent_fields = {f.name for f in dataclasses.fields(sac.Config)}
    for name, registration in ALGORITHMS.items():
        config = registration.config_cls()
        if hasattr(config, "agent"):
            assert isinstance(config.agent, sac.Config), name
            assert not agent_fields & {f.name for f in dataclasses.fields(config)} - {"agent"}
        if hasattr(config, "dynamics"):
            assert isinstance(config.dynamics, dynamics.Config), name


def test_replace_path_sets_nested_settings_and_checks_kinds():
    config = get_algorithm("mopo").config_cls()
    changed = replace_path(config, "rollouts.horizon", 1)
    assert changed.rollouts.horizon == 1 and config.rollouts.horizon == 5
    assert replace_path(config, "agent.hidden_dims", [64, 64]).agent.hidden_dims == (64, 64)
    assert replace_path(config, "agent.actor_lr", 1).agent.actor_lr == 1.0  # int to float
    assert replace_path(config, "agent.target_entropy", None).agent.target_entropy is None
    with pytest.raises(ConfigError, match="no setting 'rollouts.rollout_horizn'; valid paths: "
                                          "rollouts.batch_size"):
        replace_path(config, "rollouts.rollout_horizn", 1)
    with pytest.raises(ConfigError, match="'rollouts' is a part; set one of its settings"):
        replace_path(config, "rollouts", 1)
    with pytest.raises(ConfigError, match="'penalty_coef' is a setting, not a part"):
        replace_path(config, "penalty_coef.x", 1)
    with pytest.raises(ConfigError, match=r"expected tuple.*write 64,64"):
        replace_path(config, "agent.hidden_dims", 64)
    with pytest.raises(ConfigError, match="expected int, found 2.5"):
        replace_path(config, "rollouts.horizon", 2.5)
    with pytest.raises(ConfigError, match="expected float, found None"):
        replace_path(config, "penalty_coef", None)
    with pytest.raises(ConfigError, match="horizon must be >= 1"):  # the part's own check
        replace_path(config, "rollouts.horizon", 0)


def test_parse_overrides_scopes_by_algorithm_name():
    parsed = parse_overrides(["mopo.rollouts.horizon=1", "dynamics.hidden_dims=200,200",
                              "batch_size=128", "*.agent.actor_lr=1e-3"])
    assert parsed == {"mopo": {"rollouts.horizon": 1},
                      "*": {"dynamics.hidden_dims": (200, 200), "batch_size": 128,
                            "agent.actor_lr": 1e-3}}


def test_overrides_apply_to_every_algorithm_with_the_part_and_no_other():
    overrides = parse_overrides(["dynamics.hidden_dims=64,64", "mopo.rollouts.horizon=1"])
    plan.check_overrides(["mopo", "armor", "bc"], overrides)
    profile = profiles.RUN_PROFILES["tiny"]
    configs = {}
    for name in ("mopo", "armor", "bc"):
        registration = get_algorithm(name)
        configs[name] = registration.make_config("hopper-medium", plan.config_overrides(
            registration, profile, profile.train_for(name), overrides))
    assert configs["mopo"].dynamics.hidden_dims == configs["armor"].dynamics.hidden_dims
    assert configs["mopo"].dynamics.hidden_dims == (64, 64)
    assert configs["mopo"].rollouts.horizon == 1  # the user's override beats the task table
    assert configs["bc"] == get_algorithm("bc").make_config(overrides=plan.config_overrides(
        get_algorithm("bc"), profile, profile.train_for("bc"), {}))


@pytest.mark.parametrize("overrides, algos, message", [
    ({"*": {"dynamics.members": 3}}, ["bc"],
     r"no chosen algorithm \(bc\) has a setting 'dynamics.members'; valid paths: batch_size"),
    ({"mopo": {"rollouts.rollout_horizn": 1}}, ["mopo"],
     r"mopo has no setting 'rollouts.rollout_horizn'; valid paths: .*rollouts.horizon"),
    ({"cql": {"cql_weight": 1.0}}, ["mopo"], "'cql' is not among the chosen algorithms"),
])
def test_unknown_override_paths_are_errors(overrides, algos, message):
    with pytest.raises(ConfigError, match=message):
        plan.check_overrides(algos, overrides)


def test_bench_rejects_a_misspelt_path_in_one_line_before_any_data(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(runner, "ensure_dataset", lambda *a, **k: called.append(a))
    for argv, message in [
        (["--algos", "bc", "--set", "dynamics.members=3"], "no chosen algorithm (bc)"),
        (["--algos", "mopo", "--set", "mopo.rollouts.horizn=1"],
         "mopo has no setting 'rollouts.horizn'"),
        (["--algos", "mopo", "--set", "mopo.rollouts.horizon=0.5"],
         "mopo.rollouts.horizon: expected int, found 0.5"),
    ]:
        with pytest.raises(SystemExit) as error:
            main(["bench", "--profile", "tiny", "--out", str(tmp_path / "run"), *argv])
        text = str(error.value)
        assert text.startswith("offrl bench: ") and message in text and "\n" not in text
    assert called == [] and not (tmp_path / "run").exists()


def test_every_profile_and_task_table_names_real_settings():
    for profile in profiles.RUN_PROFILES.values():
        plan.check_profile(profile)
    for registration in ALGORITHMS.values():
        for task in registration.task_settings:
            registration.make_config(task)
    typo = dataclasses.replace(profiles.RUN_PROFILES["tiny"],
                               algorithm_overrides={"*": {"dynamics.member": 2}})
    with pytest.raises(ConfigError, match="run profile 'tiny'.*dynamics.member"):
        plan.check_profile(typo)


def test_full_profile_trains_each_algorithm_as_long_as_its_documented_reference():
    """The ``full`` profile's updates per algorithm are the table of
    docs/algorithms.md#training-length, and that table lists every registered algorithm."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "docs" / "algorithms.md").read_text()
    section = text.split("## Training length", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\w+) \| ([\d ]+) \|", section, flags=re.M))
    documented = {name: int(count.replace(" ", "")) for name, count in rows.items()}
    full = profiles.RUN_PROFILES["full"]
    assert documented == {name: full.train_for(name).num_updates for name in ALGORITHMS}
    assert documented["mopo"] == 3_000_000 and documented["rambo"] == 2_000_000


def test_equal_configs_make_equal_algorithms_with_array_only_states():
    """``make`` captures config, networks and optimizers once; states hold arrays only."""
    import jax

    registration = get_algorithm("cql")
    config = registration.make_config(overrides={"agent.hidden_dims": (8,)})
    first, second = registration.make(config, HOPPER), registration.make(config, HOPPER)
    assert first == second and hash(first) == hash(second)
    state = jax.eval_shape(first.init, jax.random.PRNGKey(0))
    for leaf in jax.tree_util.tree_leaves(state):
        assert hasattr(leaf, "shape") and hasattr(leaf, "dtype")
    assert not any(f.metadata.get("pytree_node") is False
                   for f in dataclasses.fields(state))
    assert config_paths(config)["agent.hidden_dims"] == (8,)
