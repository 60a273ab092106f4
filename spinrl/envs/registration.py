"""spinrl's environments under Gymnasium ids, registered on ``import spinrl``.

    gymnasium.make("spinrl/Maze-v0", actuators=12)
    gymnasium.make("spinrl/Cone-v0", dims=5)
    gymnasium.make("spinrl/Sepsis-v0")                       # extra 'sepsis'
    gymnasium.make("spinrl/dmc-v0", domain="cheetah", task="run", bins=3)   # extra 'dmc'
    gymnasium.make("spinrl/dmc-cheetah-run-v0", bins=3)      # the benchmark tasks by name

Registration only writes specs with string entry points: nothing here imports MuJoCo or DM Control.
Inside spinrl these ids are aliases of ``maze``, ``cone``, ``sepsis`` and ``dmc:<domain>-<task>``
(:func:`canonical`), so they keep the vectorized cores and the reference scores.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

OWN = {"spinrl/Maze-v0": "maze", "spinrl/Cone-v0": "cone", "spinrl/Sepsis-v0": "sepsis"}
DMC_ID = "spinrl/dmc-v0"
DMC_TASK_IDS = {  # the six tasks of docs/benchmarks.md section 1, one id each
    f"spinrl/dmc-{t}-v0": t
    for t in ("cheetah-run", "finger-spin", "fish-swim", "quadruped-walk", "humanoid-stand", "dog-trot")
}


def _own(env_id: str, render_mode: str | None, kwargs: dict[str, Any]) -> gym.Env:
    from spinrl import envs

    return envs.make(env_id, render_mode=render_mode, **kwargs)


def maze(render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    return _own("maze", render_mode, kwargs)


def cone(render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    return _own("cone", render_mode, kwargs)


def sepsis(render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    return _own("sepsis", render_mode, kwargs)


def dmc(domain: str = "cheetah", task: str = "run", render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    return _own(f"dmc:{domain}-{task}", render_mode, kwargs)


def register_envs() -> None:
    """Register every id above (idempotent: ids already registered are left alone)."""
    for gid, own in OWN.items():
        if gid not in gym.registry:
            gym.register(gid, entry_point=f"spinrl.envs.registration:{own}", disable_env_checker=True)
    if DMC_ID not in gym.registry:
        gym.register(DMC_ID, entry_point="spinrl.envs.registration:dmc", disable_env_checker=True)
    for gid, task in DMC_TASK_IDS.items():
        if gid not in gym.registry:
            domain, _, name = task.partition("-")
            gym.register(
                gid,
                entry_point="spinrl.envs.registration:dmc",
                kwargs={"domain": domain, "task": name},
                disable_env_checker=True,
            )


def canonical(env_id: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """spinrl's own id and options for one of the Gymnasium ids above; any other id is returned as is."""
    if env_id in OWN:
        return OWN[env_id], kwargs
    if env_id == DMC_ID or env_id in DMC_TASK_IDS:
        kw = dict(kwargs)
        if env_id == DMC_ID:
            domain, task = kw.pop("domain", "cheetah"), kw.pop("task", "run")
        else:
            domain, _, task = DMC_TASK_IDS[env_id].partition("-")
            domain, task = kw.pop("domain", domain), kw.pop("task", task)
        return f"dmc:{domain}-{task}", kw
    return env_id, kwargs


def gymnasium_id(env_id: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The Gymnasium id and options that make spinrl's ``env_id`` (inverse of :func:`canonical`)."""
    for gid, own in OWN.items():
        if env_id == own:
            return gid, dict(kwargs)
    if env_id.startswith("dmc:"):
        domain, _, task = env_id.split(":", 1)[1].partition("-")
        return DMC_ID, {"domain": domain, "task": task.replace("-", "_"), **kwargs}
    return env_id, dict(kwargs)
