"""What ``spinrl data info`` prints: a dataset's returns, episode ends and action histograms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spinrl.spaces import FactoredSpace

if TYPE_CHECKING:
    from spinrl.data.dataset import OfflineDataset


@dataclass
class Summary:
    """What ``spinrl data info`` prints; ``as_dict()`` is its ``--json`` form."""

    episodes: int
    transitions: int
    return_mean: float
    return_std: float
    return_min: float
    return_max: float
    normalized_score: float | None
    reference: dict | None
    termination_fraction: float
    truncation_fraction: float
    action_histograms: list[list[int]]
    meta: dict
    by_source: dict | None = None

    def as_dict(self) -> dict:
        return {
            "episodes": self.episodes,
            "transitions": self.transitions,
            "episode_return": {
                "mean": self.return_mean,
                "std": self.return_std,
                "min": self.return_min,
                "max": self.return_max,
            },
            "normalized_score": self.normalized_score,
            "reference_scores": self.reference,
            "termination_fraction": self.termination_fraction,
            "truncation_fraction": self.truncation_fraction,
            "action_histograms": self.action_histograms,
            "by_source": self.by_source,
            "env_id": self.meta.get("env_id"),
            "env_kwargs": self.meta.get("env_kwargs"),
            "nvec": self.meta.get("nvec"),
            "observation_shape": self.meta.get("observation_shape"),
            "level": self.meta.get("level"),
            "behaviour": self.meta.get("behaviour"),
            "generator": self.meta.get("generator"),
            "schema_version": self.meta.get("schema_version"),
            "spinrl_version": self.meta.get("spinrl_version"),
            "checksum": self.meta.get("checksum"),
        }

    def format(self) -> str:
        """Human-readable multi-line summary."""
        m = self.meta
        lines = [
            f"env            {m.get('env_id')} {m.get('env_kwargs') or ''}",
            f"level          {m.get('level')}   behaviour: {m.get('behaviour')}",
            f"nvec           {FactoredSpace(m['nvec']).describe()} (N={len(m.get('nvec', []))})",
            f"observations   shape {m.get('observation_shape')}",
            f"episodes       {self.episodes}",
            f"transitions    {self.transitions}",
            f"episode return mean {self.return_mean:.3f}  std {self.return_std:.3f}  "
            f"min {self.return_min:.3f}  max {self.return_max:.3f}",
        ]
        if self.normalized_score is not None and self.reference:
            ref = self.reference
            lines.append(
                f"normalized     {self.normalized_score:.1f}  (random {ref['random']:.2f}, expert {ref['expert']:.2f}; "
                f"source: {ref.get('source')})"
            )
        lines.append(
            f"episode ends   terminated {self.termination_fraction:.1%} "
            f" truncated {self.truncation_fraction:.1%} of episodes"
        )
        for src, b in (self.by_source or {}).items():
            norm = "" if b["normalized_score"] is None else f"  normalized {b['normalized_score']:.1f}"
            lines.append(
                f"  from {src:<8} {b['episodes']:>6} episodes {b['transitions']:>8} transitions  "
                f"return {b['return_mean']:.2f} +/- {b['return_std']:.2f}{norm}"
            )
        for i, h in enumerate(self.action_histograms[:40]):
            tot = max(sum(h), 1)
            lines.append(f"  sub-action {i:>2}: " + " ".join(f"{c / tot:.2f}" for c in h))
        if len(self.action_histograms) > 40:
            lines.append(f"  ... {len(self.action_histograms) - 40} more sub-actions")
        return "\n".join(lines)


def summarize(ds: "OfflineDataset") -> Summary:
    """Episode returns, normalized score, episode ends, per-sub-action histograms and per-source rows."""
    rets = ds.episode_returns()
    ref = ds.meta.get("reference")
    norm = None
    if ref and ref.get("random") is not None and ref.get("expert") is not None and ref["expert"] != ref["random"]:
        norm = float(100.0 * (rets.mean() - ref["random"]) / (ref["expert"] - ref["random"]))
    lengths = np.asarray(ds.episode_lengths)
    ends = np.cumsum(lengths) - 1
    acts = np.asarray(ds.actions, dtype=np.int64)
    nvec = np.asarray(ds.nvec)
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    counts = np.bincount((acts + offsets).ravel(), minlength=int(nvec.sum()))
    hists = [counts[o : o + m].tolist() for o, m in zip(offsets, nvec)]
    by_source: dict[str, dict[str, Any]] | None = None
    sources = ds.meta.get("episode_sources")
    if sources and sum(int(n) for _, n in sources) == ds.num_episodes:
        by_source, lo = {}, 0
        lengths_all = np.asarray(ds.episode_lengths)
        for src, n in sources:
            r = rets[lo : lo + int(n)]
            entry = by_source.setdefault(str(src), {"episodes": 0, "transitions": 0, "_r": []})
            entry["episodes"] += int(n)
            entry["transitions"] += int(lengths_all[lo : lo + int(n)].sum())
            entry["_r"].append(r)
            lo += int(n)
        for entry in by_source.values():
            r = np.concatenate(entry.pop("_r"))
            entry["return_mean"], entry["return_std"] = float(r.mean()), float(r.std())
            entry["normalized_score"] = (
                None
                if norm is None or ref is None
                else float(100.0 * (r.mean() - ref["random"]) / (ref["expert"] - ref["random"]))
            )
    return Summary(
        by_source=by_source,
        episodes=ds.num_episodes,
        transitions=ds.num_transitions,
        return_mean=float(rets.mean()),
        return_std=float(rets.std()),
        return_min=float(rets.min()),
        return_max=float(rets.max()),
        normalized_score=norm,
        reference=ref,
        termination_fraction=float(np.asarray(ds.terminations)[ends].mean()),
        truncation_fraction=float(np.asarray(ds.truncations)[ends].mean()),
        action_histograms=hists,
        meta=ds.meta,
    )
