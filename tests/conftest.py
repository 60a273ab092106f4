"""Shared test setup: the machine has 2 cores shared between engineers, so stay single-threaded."""

import pytest
import torch

torch.set_num_threads(1)

# Model sizes small enough that a few gradient steps take milliseconds (every actor and the ASM).
TINY = {"d_model": 16, "n_heads": 2, "n_blocks": 1, "head_hidden": 16, "mlp_hidden": 16, "critic_hidden": 16,
        "lstm_hidden": 16, "lstm_layers": 1, "sub_action_embed": 4}


@pytest.fixture(scope="session")
def small_maze(tmp_path_factory) -> str:
    """A 1,000-transition Maze set (4 actuators), made once for the tests that only need some data."""
    from spinrl.experiments.datasets import DataMakeConfig, make_dataset

    out = tmp_path_factory.mktemp("data") / "maze4.d"
    make_dataset(DataMakeConfig(env="maze", env_kwargs={"actuators": 4}, level="medium-expert", transitions=1000,
                                seed=0, out=str(out)), progress=False)
    return str(out)
