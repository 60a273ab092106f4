"""The package as a user installs it: a wheel built from this tree, installed without extras into a fresh
virtualenv, run from another directory.

What is real and what is borrowed: the wheel is built here (setuptools' PEP 517 backend, as ``pip wheel``
without build isolation calls it, in a copy of the sources) and installed by pip into a new virtualenv that sees
neither this checkout nor the test environment's packages. Its core requirements (torch, numpy, gymnasium, tqdm,
matplotlib, safetensors and everything they require, read from the wheel's own metadata) are not downloaded: they
are linked from the test environment through one ``.pth`` folder that holds only them, and pip installs the wheel with
``--no-index``, so it fails if the metadata asks for anything that is not in that folder. dm-control, MuJoCo and
the other extras are absent, as after ``pip install spinrl``.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CORE = {"numpy", "torch", "gymnasium", "tqdm", "matplotlib", "safetensors"}


def _core_requirements(wheel: Path) -> list[str]:
    """The wheel's requirements without extras (Requires-Dist lines whose marker holds with no extra)."""
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    reqs = [Requirement(ln.split(":", 1)[1].strip()) for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    return [str(canonicalize_name(r.name)) for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def _link_closure(names: list[str], folder: Path) -> set[str]:
    """Symlink into ``folder`` the installed files of ``names`` and of everything they require (no extras)."""
    folder.mkdir()
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = str(canonicalize_name(todo.pop()))
        if name in seen:
            continue
        seen.add(name)
        dist = md.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            path = Path(str(dist.locate_file(top)))
            if path.exists() and not (folder / top).exists():
                (folder / top).symlink_to(path)
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def _run(cmd: list, cwd: Path, env: dict, expect: int = 0) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == expect, f"{cmd[:3]} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
def test_wheel_without_extras_runs_the_maze_pipeline(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "spinrl", src / "spinrl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # what `pip wheel --no-build-isolation` runs, without pip's start-up (~5 s here)
    build = f"from setuptools import build_meta; build_meta.build_wheel({str(tmp_path / 'dist')!r})"
    _run([sys.executable, "-c", build], src, dict(os.environ))
    wheel = next((tmp_path / "dist").glob("spinrl-*.whl"))
    core = _core_requirements(wheel)
    assert set(core) == CORE, f"the core install changed: {sorted(core)}"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, dict(os.environ))
    linked = _link_closure(core, tmp_path / "core-site")
    assert not linked & {"dm-control", "mujoco", "gym", "icu-sepsis", "minari", "ray"}, linked
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "spinrl-core-requirements.pth").write_text(f"{tmp_path / 'core-site'}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-index", wheel],
         tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env.update(SPINRL_DATA=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    py, cli = venv / "bin" / "python", venv / "bin" / "spinrl"
    where = _run([py, "-c", "import importlib.util, spinrl; print(spinrl.__file__); "
                  "print(importlib.util.find_spec('dm_control'))"], work, env).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "None", where

    _run([cli, "data", "make", "maze", "--actuators", "3", "--episodes", "12", "--no-progress", "--out", "m.d"],
         work, env)
    _run([cli, "train", "m.d", "--out", "run", "--algo", "iql", "--actor", "factored", "--steps", "4",
          "--eval-every", "2", "--eval-episodes", "2", "--batch-size", "16", "--no-progress", "--threads", "1"],
         work, env)
    rows = (work / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) >= 3 and "eval_return_mean" in rows[0] and (work / "run" / "policy.pt").exists()
    out = _run([cli, "eval", "run/policy.pt", "--episodes", "2", "--threads", "1"], work, env).stdout
    assert "return" in out and "over 2 episodes" in out

    r = _run([cli, "data", "make", "dmc:cheetah-run", "--level", "random", "--episodes", "1", "--out", "x.d"],
             work, env, expect=2)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "spinrl[dmc]" in lines[0], r.stderr
    assert not (work / "x.d").exists()


def test_data_verbs_do_not_load_torch(tmp_path):
    """`spinrl data ...` and `spinrl envs` build only their own parsers and import no torch (several seconds)."""
    code = ("import sys\nfrom spinrl.cli.main import main\n"
            f"assert main(['data', 'info', {str(tmp_path / 'nope.d')!r}]) == 2\n"
            "assert main(['data', 'make', 'maze', '--episodes', '0']) == 2\n"
            "assert 'torch' not in sys.modules, 'a data verb imported torch'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
