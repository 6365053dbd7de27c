"""Name resolution and the error paths: no simulator needed."""

import json
import sys

import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.sim import make_env, resolve
from feedbackgen.sim.core import family_of_env_id
from feedbackgen.tasks import get_task


@pytest.mark.parametrize(("name", "env_id", "family", "task"), [
    ("BallRun", "SafetyBallRun-v0", "bullet", "BallRun"),
    ("ballrun", "SafetyBallRun-v0", "bullet", "BallRun"),
    ("OfflineCarRun-v0", "SafetyCarRun-v0", "bullet", "CarRun"),
    ("SafetyBallRun-v0", "SafetyBallRun-v0", "bullet", "BallRun"),
    ("SafetyBallReach-v0", "SafetyBallReach-v0", "bullet", None),
    ("PointGoal1", "SafetyPointGoal1-v0", "safety_gymnasium", "PointGoal1"),
    ("SafetyPointGoal1Gymnasium-v0", "SafetyPointGoal1-v0", "safety_gymnasium", "PointGoal1"),
    ("SafetyAntVelocity-v1", "SafetyAntVelocity-v1", "safety_gymnasium", "AntVelocity"),
    ("SafetyPointGoal0-v0", "SafetyPointGoal0-v0", "safety_gymnasium", None),
    ("easysparse", "SafeMetaDrive-easysparse", "metadrive", "easysparse"),
    ("SafeMetaDrive-harddense", "SafeMetaDrive-harddense", "metadrive", "harddense"),
    ("SafeMetaDrive-mediummean-v0", "SafeMetaDrive-mediummean", "metadrive", "mediummean"),
])
def test_resolve(name, env_id, family, task):
    t, e, f = resolve(name)
    assert (e, f) == (env_id, family)
    assert (t.name if t else None) == task


def test_resolve_task_object():
    task = get_task("CarCircle")
    assert resolve(task) == (task, "SafetyCarCircle-v0", "bullet")


def test_family_of_env_id():
    assert family_of_env_id("SafetyCarCircle-v0") == "bullet"
    assert family_of_env_id("SafetyCarCircle1-v0") == "safety_gymnasium"
    assert family_of_env_id("SafetyBallRunn-v0") == "bullet"
    assert family_of_env_id("SafetyAntVelocity-v1") == "safety_gymnasium"
    assert family_of_env_id("SafetyPointGoal-v0") == "safety_gymnasium"
    assert family_of_env_id("CartPole-v1") is None


@pytest.mark.parametrize("name", ["NoSuchTask", "CartPole-v1", ""])
def test_unknown_name_is_one_line_error(name):
    with pytest.raises(FeedbackgenError) as err:
        make_env(name)
    msg = str(err.value)
    assert "\n" not in msg
    assert "unknown" in msg or "task must be" in msg


def test_unknown_metadrive_id_is_one_line_error():
    expected = "unknown metadrive-simulator env id 'SafeMetaDrive-easyfast'"
    with pytest.raises(FeedbackgenError, match=expected) as err:
        make_env("SafeMetaDrive-easyfast")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "module", "extra"), [
    ("BallRun", "bullet_safety_gym", "bullet"),
    ("PointGoal1", "safety_gymnasium", "safety-gymnasium"),
    ("easysparse", "metadrive", "metadrive"),
])
def test_missing_simulator_names_the_extra(monkeypatch, name, module, extra):
    # A None entry in sys.modules makes `import module` fail, as if it were not installed.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(FeedbackgenError) as err:
        make_env(name)
    msg = str(err.value)
    assert "\n" not in msg
    assert "is not installed" in msg
    assert f"install the '{extra}' extra: pip install -e '.[{extra}]'" in msg


def test_missing_dependency_names_the_module(tmp_path, monkeypatch):
    # A simulator package that is present but needs a module that is not.
    (tmp_path / "sim_pkg_probe").mkdir()
    (tmp_path / "sim_pkg_probe" / "__init__.py").write_text("import no_such_dependency_probe\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from feedbackgen.sim.core import require

    with pytest.raises(FeedbackgenError) as err:
        require("sim_pkg_probe", "bullet")
    msg = str(err.value)
    assert "cannot be imported (missing module 'no_such_dependency_probe')" in msg
    assert "install the 'bullet' extra" in msg and "\n" not in msg


def test_bad_max_episode_steps():
    with pytest.raises(FeedbackgenError, match="max_episode_steps must be >= 1"):
        make_env("BallRun", max_episode_steps=0)


def test_shipped_task_resolves(tmp_path, monkeypatch):
    rec = get_task("BallRun").to_dict()
    rec.update(name="BallRun-tiny", max_episode_steps=12, dsrl_file=None, dsrl_env_id=None,
               base_task="BallRun")
    (tmp_path / "BallRun-tiny").mkdir()
    (tmp_path / "BallRun-tiny" / "dataset.json").write_text(json.dumps({"task": rec, "file": "data.hdf5"}))
    monkeypatch.setenv("FEEDBACKGEN_DATASETS_DIR", str(tmp_path))
    task, env_id, family = resolve("BallRun-tiny")
    assert (task.name, task.origin) == ("BallRun-tiny", "shipped")
    assert (env_id, family) == ("SafetyBallRun-v0", "bullet")
