"""Dataset-only evaluation: fitted-Q evaluation (FQE) on held-out episodes, and action agreement.

For users without a simulator (treatment logs, recommender logs) the only evidence about a policy is the
data. Two estimates, both on episodes the split holds out:

- FQE (Le, Voloshin & Yue 2019): fit Q^pi by repeated regression to r + gamma (1 - terminated)
  E_{a'~pi(s')} Q_target(s', a'), the target network refreshed once per iteration; the policy's value is
  E_{a~pi(s0)} Q(s0, a) averaged over the held-out episodes' first states. Q is an MLP on
  [s, one-hot(a_1) ... one-hot(a_N)], so any actor (including the autoregressive one, whose distribution
  is not a product) is handled by sampling: K actions per next state, drawn once before the fit.
- Action agreement: how often the policy's most likely action equals the logged one, exactly (all
  sub-actions) and per sub-action. High agreement means "imitates the data", not "good".

The discounted return of the behaviour episodes (Monte Carlo from the same first states) is reported as
an anchor, and, when the dataset names an environment, the policy's discounted return in the simulator,
so users can see how well the offline estimate tracks the truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from spinrl.errors import ConfigError
from spinrl.utils.hardware import check_threads, torch_threads
from spinrl.utils.rundir import write_json


class ActsLikePolicy(Protocol):
    def act(
        self, observations: np.ndarray, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> np.ndarray: ...


@dataclass
class FQEConfig:
    """Fitted-Q evaluation settings (defaults fit a 20k-transition dataset in about a minute on one core)."""

    gamma: float = 0.99
    """discount of the estimated value"""
    iterations: int = 50
    """target-network refreshes (each one Bellman backup: FQE sees this many steps of horizon, so long
    dense-reward tasks at gamma 0.99, e.g. DM Control, need several hundred)"""
    steps_per_iteration: int = 100
    """gradient steps regressing to one fixed target"""
    batch_size: int = 256
    """minibatch size"""
    lr: float = 1e-3
    """Adam learning rate"""
    hidden: int = 256
    """width of the two hidden layers of the Q network"""
    action_samples: int = 4
    """policy actions sampled per next state for E_{a'~pi} Q (1 suffices for a deterministic policy)"""
    heldout_fraction: float = 0.2
    """fraction of episodes held out (the FQE fit and agreement use only these)"""
    seed: int = 0
    """seed of the split, the policy's samples, initialization and minibatches"""
    deterministic: bool = False
    """evaluate the policy's most likely action instead of its samples (the simulator score samples)"""

    def validate(self) -> None:
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"--gamma must be in (0, 1], got {self.gamma}")
        for k in ("iterations", "steps_per_iteration", "batch_size", "hidden", "action_samples"):
            v = getattr(self, k)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"FQE {k} must be a positive integer, got {v!r}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"FQE heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


def _one_hot(a_BN: torch.Tensor, offsets: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenated one-hots of the sub-actions, [B, sum(nvec)], by one scatter (no loop over N)."""
    out = torch.zeros(a_BN.shape[0], total, device=a_BN.device)
    out.scatter_(1, a_BN + offsets, 1.0)
    return out


class QNet(nn.Module):
    offsets: torch.Tensor

    def __init__(self, obs_dim: int, nvec: tuple[int, ...], hidden: int):
        super().__init__()
        self.total = int(sum(nvec))
        self.register_buffer("offsets", torch.as_tensor(np.concatenate([[0], np.cumsum(nvec)[:-1]]), dtype=torch.long))
        self.net = nn.Sequential(
            nn.Linear(obs_dim + self.total, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, s_BD: torch.Tensor, a_BN: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([s_BD, _one_hot(a_BN, self.offsets, self.total)], dim=1)).squeeze(1)


def _policy_actions(
    policy: ActsLikePolicy, obs: np.ndarray, k: int, deterministic: bool, gen: torch.Generator, chunk: int = 4096
) -> np.ndarray:
    """[K, B, N] actions of the policy at ``obs`` (K copies of the mode when deterministic)."""
    out = []
    for _ in range(1 if deterministic else k):
        parts = [
            policy.act(obs[i : i + chunk], deterministic=deterministic, generator=gen)
            for i in range(0, len(obs), chunk)
        ]
        out.append(np.concatenate(parts) if parts else np.zeros((0,), dtype=np.int64))
    return np.stack(out).astype(np.int64)


def fqe(policy: ActsLikePolicy, data, cfg: FQEConfig | None = None, progress: bool = False) -> dict:
    """Fit Q^pi on ``data`` (an OfflineDataset) and return the value at its episodes' first states.

    Returns:
        {"fqe_value": mean_s0 E_{a~pi} Q(s0, a), "behaviour_value": mean discounted return of the episodes,
         "td_loss": last iteration's mean regression loss}
    """
    from spinrl.utils.progress import progress_bar

    cfg = cfg or FQEConfig()
    cfg.validate()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator()
    gen.manual_seed(cfg.seed)
    nvec = tuple(data.nvec)
    s = torch.as_tensor(np.asarray(data.transition_observations, dtype=np.float32).reshape(data.num_transitions, -1))
    s2_np = np.asarray(data.next_observations, dtype=np.float32).reshape(data.num_transitions, -1)
    s2 = torch.as_tensor(s2_np)
    a = torch.as_tensor(np.asarray(data.actions, dtype=np.int64))
    r = torch.as_tensor(np.asarray(data.rewards, dtype=np.float32))
    done = torch.as_tensor(np.asarray(data.terminations, dtype=np.float32))  # truncation bootstraps
    a2_KBN = torch.as_tensor(_policy_actions(policy, s2_np, cfg.action_samples, cfg.deterministic, gen))
    starts = np.concatenate([[0], np.cumsum(np.asarray(data.episode_lengths))[:-1]]).astype(np.int64)
    s0_np = np.asarray(data.transition_observations, dtype=np.float32).reshape(data.num_transitions, -1)[starts]
    a0_KBN = torch.as_tensor(_policy_actions(policy, s0_np, cfg.action_samples, cfg.deterministic, gen))

    q = QNet(s.shape[1], nvec, cfg.hidden)
    q_target = QNet(s.shape[1], nvec, cfg.hidden)
    q_target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    n = data.num_transitions
    K = a2_KBN.shape[0]
    bar = progress_bar(total=cfg.iterations, desc="FQE", unit="iter", disable=None if progress else True)
    loss_mean = float("nan")
    for _ in range(cfg.iterations):
        with torch.no_grad():  # one fixed regression target per iteration (a Bellman backup)
            v2 = torch.stack([q_target(s2, a2_KBN[k]) for k in range(K)]).mean(0)
            y = r + cfg.gamma * (1.0 - done) * v2
        losses = []
        for _ in range(cfg.steps_per_iteration):
            idx = torch.as_tensor(rng.integers(0, n, size=min(cfg.batch_size, n)))
            loss = ((q(s[idx], a[idx]) - y[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        q_target.load_state_dict(q.state_dict())
        loss_mean = float(np.mean(losses))
        bar.update(1)
        bar.set_postfix(loss=f"{loss_mean:.3g}")
    bar.close()
    with torch.no_grad():
        s0 = torch.as_tensor(s0_np)
        v0 = torch.stack([q(s0, a0_KBN[k]) for k in range(a0_KBN.shape[0])]).mean(0)
    return {
        "fqe_value": float(v0.mean()),
        "behaviour_value": discounted_episode_return(data, cfg.gamma),
        "td_loss": loss_mean,
    }


def discounted_episode_return(data, gamma: float) -> float:
    """Mean over episodes of sum_t gamma^t r_t (the behaviour policy's Monte Carlo value at s0)."""
    lengths = np.asarray(data.episode_lengths, dtype=np.int64)
    r = np.asarray(data.rewards, dtype=np.float64)
    t = np.arange(len(r)) - np.repeat(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    disc = r * gamma**t
    return float(np.add.reduceat(disc, np.concatenate([[0], np.cumsum(lengths)[:-1]])).mean())


def action_agreement(policy: ActsLikePolicy, data, chunk: int = 4096) -> dict:
    """Exact-match rate and per-sub-action agreement of the policy's most likely action with the data."""
    obs = np.asarray(data.transition_observations, dtype=np.float32).reshape(data.num_transitions, -1)
    acts = np.asarray(data.actions, dtype=np.int64)
    pred = np.concatenate([policy.act(obs[i : i + chunk], deterministic=True) for i in range(0, len(obs), chunk)])
    eq = pred == acts
    return {
        "exact_match": float(eq.all(1).mean()),
        "sub_action_agreement": float(eq.mean()),
        "per_sub_action": [float(x) for x in eq.mean(0)],
    }


def simulator_discounted_return(
    policy: ActsLikePolicy,
    env_id: str,
    env_kwargs: dict,
    gamma: float,
    episodes: int,
    seed: int,
    deterministic: bool = False,
) -> float:
    """The policy's mean discounted return in the simulator (what FQE estimates), resets seed+100+k."""
    from spinrl import envs
    from spinrl.evaluation.rollout import run_episodes

    gen = torch.Generator()
    gen.manual_seed(seed)
    vec = envs.make_vector(env_id, min(episodes, 16), **env_kwargs)
    eps = run_episodes(
        vec,
        lambda o: policy.act(o, deterministic=deterministic, generator=gen),
        [seed + 100 + k for k in range(episodes)],
        record=True,
    )
    return float(np.mean([np.sum(np.asarray(rw) * gamma ** np.arange(len(rw))) for rw in eps.rewards]))


def offline_evaluate(
    policy: str | Path | ActsLikePolicy,
    dataset: str | Path | Any,
    cfg: FQEConfig | None = None,
    seed: int | None = None,
    iterations: int | None = None,
    simulate: bool = True,
    sim_episodes: int = 20,
    progress: bool = True,
    threads: int | None = None,
) -> dict:
    """FQE and action agreement on the held-out episodes of ``dataset`` (+ the simulator's truth if available).

    Args:
        policy: a ``policy.pt`` path or an object with ``act(obs, deterministic, generator)``.
        dataset: a dataset directory or an OfflineDataset.
        simulate: also roll the policy out in the dataset's environment (when it names one) for the
            discounted return that FQE estimates.
        threads: torch CPU threads for the FQE fit and rollouts (the caller's count is restored); None keeps
            the process's.
    """
    check_threads(threads)
    with torch_threads(threads):
        return _offline_evaluate(policy, dataset, cfg, seed, iterations, simulate, sim_episodes, progress)


def _offline_evaluate(policy, dataset, cfg, seed, iterations, simulate, sim_episodes, progress) -> dict:
    from spinrl.data import load
    from spinrl.evaluation.policy import Policy

    cfg = cfg or FQEConfig()
    if seed is not None:
        cfg.seed = seed
    if iterations is not None:
        cfg.iterations = iterations
    cfg.validate()
    pol = Policy.load(policy) if isinstance(policy, (str, Path)) else policy
    ds = load(dataset) if isinstance(dataset, (str, Path)) else dataset
    if hasattr(pol, "nvec") and tuple(pol.nvec) != tuple(ds.nvec):
        raise ConfigError(
            f"--offline dataset has nvec {list(ds.nvec)} but the policy acts in {list(pol.nvec)}; "
            "use the dataset the policy was trained on (or one of the same task)"
        )
    if ds.num_episodes < 2:
        raise ConfigError(f"--offline dataset has {ds.num_episodes} episode(s); a held-out split needs at least 2")
    _, held = ds.split(cfg.heldout_fraction, seed=cfg.seed)
    res = fqe(pol, held, cfg, progress=progress)
    res.update(action_agreement(pol, held))
    res.update(
        {
            "gamma": cfg.gamma,
            "heldout_episodes": held.num_episodes,
            "heldout_transitions": held.num_transitions,
            "fqe": asdict(cfg),
            "dataset": str(dataset) if isinstance(dataset, (str, Path)) else None,
            "simulator_discounted_return": None,
        }
    )
    if simulate and ds.env_id is not None:
        try:
            res["simulator_discounted_return"] = simulator_discounted_return(
                pol, ds.env_id, ds.env_kwargs, cfg.gamma, sim_episodes, cfg.seed, cfg.deterministic
            )
            res["simulator_episodes"] = sim_episodes
        except Exception as e:  # noqa: BLE001 - a missing simulator must not lose the offline estimate
            res["simulator_error"] = f"{e.__class__.__name__}: {e}"
    return res


def write_offline_eval(run_dir: str | Path, res: dict) -> Path:
    """``offline_eval.json`` in a run directory, where ``spinrl report`` finds it."""
    p = Path(run_dir) / "offline_eval.json"
    write_json(p, res)
    return p
