"""Environments: shapes, determinism, closed-form dynamics checks, references and scripted policies."""

import numpy as np
import pytest

import spinrl.envs as E
from spinrl.envs.core import rollout_returns
from spinrl.envs.maze import MazeCore, actuator_vectors, all_joint_actions, max_motion_norm
from spinrl.errors import MissingExtraError, SpinError


def _roll(env_id, level, n, seed=0, **kw):
    venv = E.make_vector(env_id, n, **kw)
    return rollout_returns(venv, E.behaviour_policy(env_id, level, **kw), list(range(1000, 1000 + n)), np.random.default_rng(seed))


@pytest.mark.parametrize("env_id,kw", [("maze", {}), ("maze", {"actuators": 3}), ("cone", {}), ("cone", {"include_distances": False})])
def test_construct_and_step(env_id, kw):
    env = E.make(env_id, **kw)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    obs, r, te, tr, _ = env.step(env.action_space.sample())
    assert obs.shape == env.observation_space.shape and isinstance(r, float) and isinstance(te, bool)
    v = E.make_vector(env_id, 4, **kw)
    o = v.reset([0, 1, 2, 3])
    assert o.shape == (4, v.observation_dim) and o.dtype == np.float32
    o, r, te, tr = v.step(np.zeros((4, len(v.nvec)), dtype=np.int64))
    assert r.dtype == np.float64 and te.dtype == bool and tr.dtype == bool and r.shape == (4,)


def test_maze_motion_scaling_brute_force():
    for n in (3, 4, 5, 7, 8, 10, 12):
        u = actuator_vectors(n)
        brute = np.linalg.norm(all_joint_actions(n) @ u, axis=1).max()
        assert max_motion_norm(u) == pytest.approx(brute, rel=1e-12)
    core = MazeCore(1, 12)
    assert np.linalg.norm(all_joint_actions(12) @ core.motion_matrix, axis=1).max() == pytest.approx(1.0)
    assert max_motion_norm(actuator_vectors(40)) > 0  # large n needs no enumeration


def test_maze_wall_blocks_motion():
    # n=4: the up actuator alone moves 0.045/sqrt(2) = 0.0318 per sub-step. From (0.25, 0.2) the first
    # sub-step reaches y=0.2318; the second (0.2636) is inside wall 1 (y in [0.25, 0.3]), so the step ends.
    core = MazeCore(1, 4)
    moved = []
    for seed in range(50):
        core.reset([seed])
        core.pos[:] = [0.25, 0.2]
        core.step(np.array([[0, 1, 0, 0]]), np.array([True]), np.array([0]))
        moved.append(core.pos[0].copy())
    scale = 1 / max_motion_norm(actuator_vectors(4))
    ys = np.array(moved)[:, 1]
    assert np.isclose(ys, 0.2 + 0.045 * scale).sum() >= 30  # noise-free steps stop before the wall
    assert (ys < 0.25).all()  # nothing ever enters the wall


def test_maze_vector_equals_single_envs():
    seeds = [3, 7, 11]
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 2, (150, 3, 12))
    v = E.make_vector("maze", 3)
    ov = [v.reset(seeds)]
    for t in range(150):
        ov.append(v.step(acts[t])[0])
    for b, s in enumerate(seeds):
        env = E.make("maze")
        o, _ = env.reset(seed=s)
        np.testing.assert_array_equal(o, ov[0][b])
        for t in range(150):
            o, r, te, tr, _ = env.step(acts[t, b])
            np.testing.assert_array_equal(o, ov[t + 1][b])
            if te or tr:
                break


def test_determinism_and_time_limit_is_truncation():
    env = E.make("maze")
    runs = []
    for _ in range(2):
        env.reset(seed=5)
        traj = [env.step(np.ones(12, dtype=np.int64) * (t % 2)) for t in range(150)]
        runs.append(np.array([o for o, *_ in traj]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert traj[-1][3] is True and traj[-1][2] is False  # 150 steps, never reached the goal
    # frozen rows after the end
    v = E.make_vector("maze", 2)
    v.reset([0, 1])
    for _ in range(150):
        o, r, te, tr = v.step(np.zeros((2, 12), dtype=np.int64))
    o2, r2, te2, tr2 = v.step(np.zeros((2, 12), dtype=np.int64))
    assert tr2.all() and (r2 == 0).all() and np.array_equal(o, o2)


def test_cone_pits_goal_and_rewards():
    v = E.make_vector("cone", 1, dims=2, size=4, n_pits=1, pit_seed=0)
    core = v.core
    pit = core.pits[0]
    assert not (pit == 0).all() and not (pit == 3).all()
    v.reset([0])
    core.pos[:] = pit - np.array([1, 0]) if pit[0] > 0 else pit - np.array([0, 1])
    mv = pit - core.pos[0]
    a = np.zeros((1, 4), dtype=np.int64)
    a[0, 0::2], a[0, 1::2] = mv == 1, mv == -1
    _, r, te, _ = v.step(a)
    assert te[0] and r[0] == pytest.approx(-10 * np.sqrt(2) * 3)
    v.reset([0])
    core.pos[:] = [2, 3] if not np.array_equal(pit, [2, 3]) else [3, 2]
    _, r, te, _ = v.step(np.array([[1, 0, 1, 0]]))  # +1, +1, clipped at the boundary -> goal
    assert te[0] and r[0] == 10.0
    v.reset([0])
    o, r, te, _ = v.step(np.array([[1, 1, 0, 0]]))  # stay, stay: -distance
    assert not te[0] and r[0] == pytest.approx(-np.sqrt(18)) and o[0, 0] == 0


def test_cone_goal_reachable_for_many_seeds():
    for seed in range(20):
        ex = E.behaviour_policy("cone", "expert", dims=3, size=5, n_pits=12, pit_seed=seed)
        assert _roll("cone", "expert", 2, dims=3, size=5, n_pits=12, pit_seed=seed).min() > 0 - 10 * 20, ex


@pytest.mark.slow
def test_dmc_cheetah_bins_and_truncation():
    env = E.make("dmc:cheetah-run", bins=3)
    assert list(env.action_space.nvec) == [3] * 6
    np.testing.assert_allclose(env.continuous_action(np.array([0, 1, 2, 0, 1, 2])), [-1, 0, 1, -1, 0, 1])
    o1, _ = env.reset(seed=4)
    o2, _ = env.reset(seed=4)
    assert o1.shape == (17,) and o1.dtype == np.float32 and np.array_equal(o1, o2)
    for t in range(1000):
        o, r, te, tr, _ = env.step(np.ones(6, dtype=np.int64))
        if te or tr:
            break
    assert (t, te, tr) == (999, False, True)
    v = E.make_vector("dmc:finger-spin", 2, bins=[3, 5])
    assert list(v.nvec) == [3, 5] and v.reset([0, 1]).shape == (2, 9)


@pytest.mark.parametrize(
    "env_id,kw,match",
    [
        ("maze", {"actuatorz": 3}, "actuatorz"),
        ("maze", {"actuators": 1}, "actuators"),
        ("nope", {}, "maze, cone"),
        ("dmc:cheetah-fly", {}, "cheetah-run"),
        ("dmc:cheetah-run", {"bins": 1}, "bins"),
        ("cone", {"size": 1}, "size"),
    ],
)
def test_bad_kwargs_raise_spin_error(env_id, kw, match):
    with pytest.raises(SpinError, match=match):
        E.make(env_id, **kw)


def test_reference_scores_and_list():
    ref = E.reference_scores("maze", actuators=12)
    assert ref.normalize(ref.random) == 0 and ref.normalize(ref.expert) == pytest.approx(100)
    assert E.reference_scores("dmc:dog-trot", bins=30).expert == 768.24
    assert E.reference_scores("maze", actuators=4) is None
    ids = [r["id"] for r in E.list_envs()]
    assert {"maze", "cone", "sepsis", "dmc:humanoid-stand"} <= set(ids)
    assert next(r for r in E.list_envs() if r["id"] == "dmc:dog-trot")["joint_size"] == 3**38


@pytest.mark.parametrize("env_id,kw", [("maze", {"actuators": 12}), ("cone", {})])
def test_expert_and_medium_scores(env_id, kw):
    # measured (400 episodes): maze-12 expert ~100, medium ~47; cone expert 100, medium ~47
    ref = E.reference_scores(env_id, **kw)
    assert ref.normalize(_roll(env_id, "expert", 200, **kw).mean()) >= 95
    med = ref.normalize(_roll(env_id, "medium", 400, **kw).mean())
    assert 35 <= med <= 55, med
    assert ref.normalize(_roll(env_id, "random", 200, **kw).mean()) <= 5


def test_sepsis():
    pytest.importorskip("icu_sepsis")
    from spinrl.envs.sepsis import SEPSIS_EXACT, exact_values, state_index

    env = E.make("sepsis")
    assert list(env.action_space.nvec) == [5, 5]
    v = E.make_vector("sepsis", 500)
    obs = v.reset(list(range(500)))
    assert obs.shape == (500, 47) and obs.dtype == np.float32
    np.testing.assert_array_equal(v.core.dyn["features"][state_index(obs)], obs)
    ret = _roll("sepsis", "expert", 2000)
    assert set(np.unique(ret)) <= {0.0, 1.0} and abs(ret.mean() - SEPSIS_EXACT["clinicians"]) < 0.04
    ex = exact_values()
    for k in SEPSIS_EXACT:
        assert ex[k] == pytest.approx(SEPSIS_EXACT[k], abs=1e-8)


def test_sepsis_missing_extra(monkeypatch):
    import importlib.util

    from spinrl.envs import sepsis

    sepsis.load_dynamics.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match="spinrl\\[sepsis\\]"):
        E.make("sepsis")
    sepsis.load_dynamics.cache_clear()
