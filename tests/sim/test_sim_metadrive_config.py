"""DSRL MetaDrive configuration and cost terms (pure functions: no simulator needed)."""

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.sim.metadrive import ENV_IDS, TASK_NAMES, dsrl_config, extra_costs
from feedbackgen.tasks import get_task


@pytest.mark.parametrize(("name", "blocks", "start_seed", "density"), [
    ("easysparse", "SCS", 0, 0.10), ("easymean", "SCS", 0, 0.15), ("easydense", "SCS", 0, 0.20),
    ("mediumsparse", "XST", 100, 0.10), ("mediummean", "XST", 100, 0.15), ("mediumdense", "XST", 100, 0.20),
    ("hardsparse", "TRO", 200, 0.10), ("hardmean", "TRO", 200, 0.15), ("harddense", "TRO", 200, 0.20),
])
def test_dsrl_config(name, blocks, start_seed, density):
    cfg = dsrl_config(name)
    assert cfg["map_config"] == {"type": "block_sequence", "config": blocks}
    assert (cfg["start_seed"], cfg["traffic_density"]) == (start_seed, density)
    assert (cfg["num_scenarios"], cfg["horizon"], cfg["accident_prob"]) == (1, 1000, 0.0)
    assert (cfg["crash_vehicle_penalty"], cfg["random_traffic"], cfg["traffic_mode"]) == (0.0, True, "hybrid")
    assert get_task(name).env_id == f"SafeMetaDrive-{name}"


def test_names_cover_the_task_table():
    assert len(TASK_NAMES) == len(ENV_IDS) == 9
    for env_id in ENV_IDS:
        assert get_task(env_id).suite == "metadrive"


def test_unknown_config_name():
    with pytest.raises(FeedbackgenError, match="unknown metadrive-simulator env id"):
        dsrl_config("easyfast")


def test_extra_costs():
    config = {"out_of_road_cost": 1.0, "crash_vehicle_cost": 1.0}
    obs = np.ones(261, np.float32)
    obs[-240:][17] = 0.04  # an obstacle at 4% of the lidar range
    info = {"velocity": 25.0 / 3.6, "out_of_road": False, "crash": True}  # 25 km/h, in m/s
    terms = extra_costs(info, obs, config)
    assert terms["velocity_cost"] == pytest.approx(0.15)
    assert terms["proximity_cost"] == pytest.approx(0.01 * 0.06**2)
    assert (terms["out_of_road_cost"], terms["crash_cost"]) == (0.0, 1.0)
    slow = extra_costs({"velocity": 2.0, "out_of_road": True, "crash": False}, np.ones(261), config)
    assert slow == {"velocity_cost": 0.0, "proximity_cost": 0.0, "out_of_road_cost": 1.0, "crash_cost": 0.0}
