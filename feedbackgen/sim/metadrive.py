"""MetaDrive family: the nine DSRL driving tasks (``easysparse`` … ``harddense``) on
metadrive-simulator 0.4.3, physics only and offline.

DSRL defined these tasks on MetaDrive 0.2 (a fork); this module rebuilds them on 0.4.3:

- ``SafeMetaDriveEnv`` with the DSRL configuration (map block sequence, start seed, traffic
  density; random traffic in hybrid mode, crash-vehicle penalty 0, no accidents, one scenario,
  horizon 1000). ``environment_num`` is ``num_scenarios`` in 0.4.3.
- IDM traffic (target speed 30 km/h, acceleration factor 1.0, deceleration factor 5): DSRL set
  these through config keys that 0.4.3 does not read; 0.4.3's ``IDMPolicy`` has exactly these
  values built in (``NORMAL_SPEED=30``, ``ACC_FACTOR=1.0``, ``DEACC_FACTOR=-5``, a deceleration of
  magnitude 5), which :func:`_check_idm` verifies at import.
- Cost per step = MetaDrive's cost (the configured out-of-road cost, else the crash cost) + DSRL's
  velocity cost ``0.01 * max(0, v - 10)`` with v in km/h (MetaDrive 0.2's ``velocity`` was km/h;
  0.4.3 reports m/s, so it is converted) + DSRL's proximity cost
  ``0.01 * max(0, 0.1 - min(obs[-240:]))**2``. ``info`` carries each term
  (``velocity_cost``, ``proximity_cost``, ``out_of_road_cost``, ``crash_cost``) as DSRL does.
- An episode terminates on arrival, crash or leaving the road; it is truncated at the horizon.
- Observation: the 261-dim lidar state of the DSRL datasets. 0.4.3's lidar state has 259 dims
  (ego state 9 + navigation 10 + lidar 240); the two missing ones are the ego vehicle's
  normalised length and width, which MetaDrive puts first in the state when it randomises the
  agent model. Here the default vehicle is kept and those two entries are always included.
- Offline: ``BaseEngine.try_pull_asset`` (the asset download at the first reset) is replaced
  by a no-op, rendering stays off, MetaDrive logs only errors.

Seeding: the map and the ego start are fixed by the task (one scenario); ``reset(seed)`` seeds the
traffic generator, so the same seed gives the same traffic. MetaDrive allows one open environment
per process.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import numpy as np

from feedbackgen.errors import FeedbackgenError
from feedbackgen.sim.core import require, unknown_env_id

#: difficulty -> (map block sequence, start seed)
MAPS = {"easy": ("SCS", 0), "medium": ("XST", 100), "hard": ("TRO", 200)}
#: traffic level -> traffic density
DENSITIES = {"sparse": 0.10, "mean": 0.15, "dense": 0.20}
TASK_NAMES = tuple(d + t for d in MAPS for t in DENSITIES)
ENV_IDS = tuple(f"SafeMetaDrive-{name}" for name in TASK_NAMES)
HORIZON = 1000
OBS_DIM = 261
LIDAR_DIM = 240

_open: list[Any] = []  # the one open backend (MetaDrive's engine is a per-process singleton)


def dsrl_config(name: str) -> dict[str, Any]:
    """The DSRL configuration of one task (``easysparse`` …), in metadrive 0.4.3 keys.

    ``traffic_mode`` is the string value of ``TrafficMode.Hybrid``.
    """
    for difficulty, (blocks, start_seed) in MAPS.items():
        if name.startswith(difficulty) and name[len(difficulty):] in DENSITIES:
            return {
                "start_seed": start_seed,
                "num_scenarios": 1,
                "map": 3,
                "map_config": {"type": "block_sequence", "config": blocks},
                "traffic_density": DENSITIES[name[len(difficulty):]],
                "accident_prob": 0.0,
                "horizon": HORIZON,
                "crash_vehicle_penalty": 0.0,
                "random_traffic": True,
                "traffic_mode": "hybrid",
            }
    raise unknown_env_id(f"SafeMetaDrive-{name}", "metadrive", list(ENV_IDS))


def extra_costs(info: dict, obs: np.ndarray, config: Any) -> dict[str, float]:
    """DSRL's per-step cost terms from a step's info and observation.

    Returns:
        ``velocity_cost`` and ``proximity_cost`` (added to the cost) and ``out_of_road_cost`` and
        ``crash_cost`` (already in MetaDrive's cost; reported as DSRL does).
    """
    speed_kmh = float(info["velocity"]) * 3.6
    min_lidar = float(np.min(obs[-LIDAR_DIM:]))
    return {
        "velocity_cost": 0.01 * max(0.0, speed_kmh - 10.0),
        "proximity_cost": 0.01 * max(0.0, 0.1 - min_lidar) ** 2,
        "out_of_road_cost": float(config["out_of_road_cost"]) if info["out_of_road"] else 0.0,
        "crash_cost": float(config["crash_vehicle_cost"]) if info["crash"] else 0.0,
    }


def _check_idm(idm_policy: Any) -> None:
    expected = {"NORMAL_SPEED": 30, "ACC_FACTOR": 1.0, "DEACC_FACTOR": -5}
    found = {k: getattr(idm_policy, k, None) for k in expected}
    if found != expected:
        raise FeedbackgenError(f"this metadrive-simulator's IDM traffic ({found}) differs from DSRL's "
                               f"({expected}); install the 'metadrive' extra's version (0.4.3)")


@cache
def _metadrive() -> dict[str, Any]:
    """Import metadrive once, patch it for offline physics-only use, build the observation class."""
    from metadrive.engine.base_engine import BaseEngine
    from metadrive.envs.safe_metadrive_env import SafeMetaDriveEnv
    from metadrive.manager.traffic_manager import TrafficMode
    from metadrive.obs.state_obs import LidarStateObservation, StateObservation
    from metadrive.policy.idm_policy import IDMPolicy

    _check_idm(IDMPolicy)
    # No asset download: physics-only runs need none, and the machine is offline.
    BaseEngine.try_pull_asset = staticmethod(lambda: None)

    class DSRLStateObservation(StateObservation):
        """MetaDrive's state with the ego's normalised length and width always first (DSRL's 261)."""

        @property
        def observation_space(self):
            space = super().observation_space
            if self.config["random_agent_model"]:
                return space
            return type(space)(-0.0, 1.0, shape=(space.shape[0] + 2,), dtype=np.float32)

        def vehicle_state(self, vehicle):
            state = super().vehicle_state(vehicle)
            if self.config["random_agent_model"]:
                return state
            size = [min(max(vehicle.LENGTH / vehicle.MAX_LENGTH, 0.0), 1.0),
                    min(max(vehicle.WIDTH / vehicle.MAX_WIDTH, 0.0), 1.0)]
            return size + list(state)

    class DSRLLidarStateObservation(LidarStateObservation):
        """Lidar state observation over :class:`DSRLStateObservation`."""

        def __init__(self, config):
            super().__init__(config)
            self.state_obs = DSRLStateObservation(config)

    return {"env_class": SafeMetaDriveEnv, "hybrid": TrafficMode.Hybrid,
            "observation": DSRLLidarStateObservation}


class MetaDriveBackend:
    """One DSRL MetaDrive task behind the backend protocol (see the module docstring)."""

    def __init__(self, name: str, overrides: dict[str, Any]):
        require("metadrive", "metadrive")
        md = _metadrive()
        config = dsrl_config(name)
        config.update(traffic_mode=md["hybrid"], use_render=False, image_observation=False,
                      show_interface=False, show_logo=False, show_fps=False,
                      agent_observation=md["observation"], log_level=logging.ERROR)
        config.update(overrides)
        if _open:
            raise FeedbackgenError("a MetaDrive environment is already open in this process and MetaDrive "
                                   "allows only one; close() it before making another")
        try:
            self.env = md["env_class"](config)
        except (KeyError, ValueError, AssertionError) as exc:
            raise FeedbackgenError(f"bad MetaDrive configuration for {name}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                                   "check the overrides passed to make_env") from None
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space
        self.spec_max_episode_steps = int(self.env.config["horizon"])
        self._start_seed = int(self.env.config["start_seed"])
        _open.append(self)

    def reset(self, seed: int | None) -> tuple[np.ndarray, dict]:
        """Reset the one scenario; ``seed`` seeds the traffic generator."""
        if seed is not None:
            self.env.lazy_init()  # creates the engine and its managers on the first reset
            # With random traffic the traffic manager ignores the scenario seed; seed it directly.
            from metadrive.base_class.randomizable import Randomizable

            Randomizable.seed(self.env.engine.traffic_manager, int(seed) % 2**32)
        obs, info = self.env.reset(seed=self._start_seed)
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        """Step with DSRL's cost terms and termination rule."""
        obs, reward, _terminated, _truncated, info = self.env.step(action)
        terms = extra_costs(info, obs, self.env.config)
        info.update(terms)
        cost = float(info["cost"]) + terms["velocity_cost"] + terms["proximity_cost"]
        info["cost"] = cost
        terminated = bool(info["arrive_dest"] or info["crash"] or info["out_of_road"])
        truncated = bool(info["max_step"]) and not terminated
        return obs, float(reward), cost, terminated, truncated, info

    def close(self) -> None:
        """Close MetaDrive's engine so another MetaDrive env can be made."""
        try:
            self.env.close()
        finally:
            if self in _open:
                _open.remove(self)


def open_backend(env_id: str, max_episode_steps: int | None, overrides: dict[str, Any]) -> MetaDriveBackend:
    """Make one of the nine DSRL MetaDrive tasks by its env id (``SafeMetaDrive-easysparse``).

    Args:
        env_id: ``SafeMetaDrive-<task>``.
        max_episode_steps: the horizon (None: DSRL's 1000).
        overrides: MetaDrive config entries that replace the DSRL ones.

    Raises:
        FeedbackgenError: metadrive-simulator is not installed, the id is unknown, or another
            MetaDrive env is open.
    """
    if env_id not in ENV_IDS:
        raise unknown_env_id(env_id, "metadrive", list(ENV_IDS))
    overrides = dict(overrides)
    if max_episode_steps is not None:
        overrides.setdefault("horizon", int(max_episode_steps))
    return MetaDriveBackend(env_id.removeprefix("SafeMetaDrive-"), overrides)


def idm_driver(env: Any, target_speed: float, seed: int) -> Any:
    """MetaDrive's own ``IDMPolicy`` driving the ego vehicle of ``env`` (a ``SafeEnv`` just reset).

    The policy (IDM longitudinal control + PID lane keeping, with MetaDrive's routing lane changes)
    gets ``target_speed`` in km/h as its ``NORMAL_SPEED`` (MetaDrive's default 30); ``seed`` seeds its
    lane-change timer. Returns a callable giving the action ``[steering, acceleration]`` of the current
    state (the caller clips it to the action space, as MetaDrive does for env actions).

    Raises:
        FeedbackgenError: ``env`` is not a MetaDrive task.
    """
    backend = getattr(env, "_backend", None)
    if not isinstance(backend, MetaDriveBackend):
        raise FeedbackgenError(f"idm: policies drive MetaDrive's ego vehicle; task "
                               f"{getattr(env, 'task', env)} is not a MetaDrive task")
    from metadrive.policy.idm_policy import IDMPolicy

    cls = type("TargetSpeedIDMPolicy", (IDMPolicy,), {"NORMAL_SPEED": float(target_speed)})
    policy = cls(backend.env.agent, int(seed) % 2**31)
    return policy.act
