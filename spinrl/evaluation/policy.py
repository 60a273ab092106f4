"""A trained policy as a self-contained file: load it and act, no training machinery needed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spinrl.algorithms import ALGORITHMS, CONFIGS
from spinrl.algorithms.common import Nets
from spinrl.errors import CheckpointError, SpinError
from spinrl.models import FactoredTwinCritic, ModelConfig, build_actor
from spinrl.models.actors import ActorModule, CachedFeatureActor
from spinrl.utils.checkpoint import load_checkpoint, save_atomic, save_safetensors

POLICY_SCHEMA = 1


class Policy:
    """Acts with a trained actor (and, for BCQ, its critic) on batches of observations.

    Example:
        >>> policy = Policy.load("runs/spin/policy.pt")
        >>> actions = policy.act(observations)           # [B, obs_dim] -> [B, N] int64
    """

    def __init__(self, nets: Nets, algo: str, algo_cfg: Any, meta: dict, device: torch.device | str = "cpu"):
        self.nets = nets
        self.algo = algo
        self.algo_cfg = algo_cfg
        self.meta = meta
        self.device = torch.device(device)
        self._module = ALGORITHMS[algo]

    @property
    def nvec(self) -> tuple[int, ...]:
        return tuple(self.meta["nvec"])

    @property
    def observation_dim(self) -> int:
        return int(self.meta["obs_dim"])

    def act_tensor(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Batched actions as a long tensor [B, N] (networks in eval mode: no dropout)."""
        was = self.nets.actor.training
        self.nets.actor.eval()
        try:
            with torch.no_grad():
                return self._module.act(self.nets, obs, self.algo_cfg, deterministic, generator)
        finally:
            self.nets.actor.train(was)

    def action_probs(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Probability of every joint action (row-major over sub-actions) in each state, [B, prod(nvec)],
        as ``act`` draws it (each algorithm's ``action_probs``); for exact evaluation on a known model."""
        joint = int(np.prod(self.nvec))
        if joint > 4096:
            raise SpinError(f"action_probs enumerates joint actions: {joint} is too many (at most 4096)")
        grids = torch.meshgrid(*[torch.arange(m, device=obs.device) for m in self.nvec], indexing="ij")
        all_AN = torch.stack([g.reshape(-1) for g in grids], dim=1)
        chunk = max(1, 65536 // joint)  # states per call: bounded memory
        was = self.nets.actor.training
        self.nets.actor.eval()
        try:
            with torch.no_grad():
                return torch.cat(
                    [
                        self._module.action_probs(self.nets, obs[i : i + chunk], all_AN, self.algo_cfg, deterministic)
                        for i in range(0, obs.shape[0], chunk)
                    ]
                )
        finally:
            self.nets.actor.train(was)

    def act(
        self, observations: np.ndarray, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> np.ndarray:
        """Actions for a batch of observations ``[B, obs_dim]`` (or one ``[obs_dim]``), int64."""
        obs = np.asarray(observations, dtype=np.float32)
        single = obs.ndim == 1
        if single:
            obs = obs[None]
        if obs.ndim != 2 or obs.shape[1] != self.observation_dim:
            raise SpinError(
                f"observations must have shape [B, {self.observation_dim}], got {np.asarray(observations).shape}"
            )
        if not np.isfinite(obs).all():  # a NaN/inf observation would silently get an arbitrary action
            r = int(np.argwhere(~np.isfinite(obs))[0][0])
            raise SpinError(f"observations[{r}] contains NaN/inf; a policy acts only on finite observations")
        a = self.act_tensor(torch.from_numpy(obs).to(self.device), deterministic, generator).cpu().numpy()
        return a[0] if single else a

    __call__ = act

    def to_dict(self) -> dict:
        """The content of a policy file: schema, kind, meta, algo_cfg and the actor's and critic's state dicts."""
        return {
            "schema": POLICY_SCHEMA,
            "kind": "policy",
            "meta": self.meta,
            "algo_cfg": dataclasses.asdict(self.algo_cfg),
            "actor": self.nets.actor.state_dict(),
            "critic": self.nets.critic.state_dict(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the policy; a ``.safetensors`` path writes weights plus a JSON header (loads without pickle)."""
        return write_policy(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Policy":
        """Load a ``policy.pt`` or ``policy.safetensors`` written by training (no code runs on load)."""
        ck = load_checkpoint(path, "policy file")
        if ck.get("kind") != "policy":
            raise CheckpointError(f"{path} is a {ck.get('kind')!r} file, not a policy; pass a run's policy.pt")
        meta = ck["meta"]
        try:
            algo = meta["algo"]
            model_cfg = ModelConfig(**meta["model"])
            if meta["actor"] == "spin-cached":
                actor: ActorModule = CachedFeatureActor(meta["obs_dim"], meta["nvec"], model_cfg)
            else:
                kind = "saint" if meta["actor"] == "spin" else meta["actor"]  # same architecture, weights in file
                actor = build_actor(kind, meta["obs_dim"], meta["nvec"], model_cfg)
            actor.load_state_dict(ck["actor"])
            critic = FactoredTwinCritic(meta["obs_dim"], meta["nvec"], model_cfg.critic_hidden)
            critic.load_state_dict(ck["critic"])
            algo_cfg = CONFIGS[algo](**ck["algo_cfg"])
        except (KeyError, TypeError, RuntimeError, ValueError, AttributeError, OverflowError) as e:
            raise CheckpointError(
                f"policy file {path} is incomplete or from another version ({str(e).splitlines()[0][:120]})"
            ) from None
        for part, state in (("actor", ck["actor"]), ("critic", ck["critic"])):
            for name, t in state.items():  # a NaN-weight policy (a diverged run) must not get a score
                if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                    raise CheckpointError(
                        f"policy file {path} has NaN/inf {part} weights ({name}): the run diverged; "
                        "retrain (e.g. with a smaller --lr)"
                    )
        dev = torch.device(device)
        nets = Nets(actor=actor.to(dev).eval(), critic=critic.to(dev).eval(), critic_target=critic)
        return cls(nets, algo, algo_cfg, meta, dev)


def write_policy(obj: dict, path: str | Path) -> Path:
    """Write a policy file's content (:meth:`Policy.to_dict`) atomically: ``.safetensors`` as weights plus a JSON
    header, anything else with ``torch.save``; both load with :meth:`Policy.load`."""
    path = Path(path)
    (save_safetensors if path.suffix == ".safetensors" else save_atomic)(obj, path)
    return path
