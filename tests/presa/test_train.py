"""Real (tiny) training runs: outputs, determinism, exact resume, dual-variable direction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_run import assert_same_state, tiny_for

from feedbackgen.errors import FeedbackgenError
from feedbackgen.store import open_store
from presa.checkpoint import load_actor, load_checkpoint
from presa.config import TrainConfig, resolve_config
from presa.precision import resolve_precision
from presa.trainer import TrainEvent, resume, train


def cfg_of(**over) -> TrainConfig:
    return resolve_config(suite="bullet", overrides={**tiny_for(over.get("algo", "presa")), **over})


@pytest.fixture(scope="module")
def base_run(toy_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "base"
    train(cfg_of(), toy_store, out)
    return out


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_contents(base_run: Path, toy_store: Path) -> None:
    cfg = cfg_of()
    assert cfg.precision == "auto"
    resolved = resolve_precision("auto", "cpu").precision  # config.yaml records what auto resolved to
    assert TrainConfig.from_dict(yaml.safe_load((base_run / "config.yaml").read_text())) == \
        cfg.replace(precision=resolved)
    info = json.loads((base_run / "run.json").read_text())
    assert info["precision"]["requested"] == "auto" and info["precision"]["resolved"] == resolved
    assert info["store"]["id"] == "test/toy-v0" and len(info["store"]["fingerprint"]) == 64
    assert info["seed"] == 0 and info["algo"] == "presa" and info["threshold"] == 4.0
    assert info["task"]["name"] == "Toy-v0" and info["toolkit_version"]
    assert "git_commit" in info and info["counts"]["pairs"] == 200
    recs = records(base_run)
    assert [r["step"] for r in recs] == list(range(5, 61, 5))
    for r in recs:
        assert all(np.isfinite(v) for k, v in r.items())
        assert all(k == "step" or k.startswith("train/") for k in r)
    assert "train/bc_loss" in recs[0] and "train/g" not in recs[0]
    for key in ("loss", "pref_loss", "g", "nu", "zref", "safe_frac", "steps_per_s"):
        assert f"train/{key}" in recs[-1]
    png = (base_run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    names = sorted(p.name for p in (base_run / "checkpoints").iterdir())
    assert names == ["final.pt", "step_0000020.pt", "step_0000040.pt"]
    ck = load_checkpoint(base_run / "checkpoints" / "final.pt")
    for key in (
        "policy",
        "optimizer",
        "nu",
        "zref",
        "obs_mean",
        "obs_std",
        "config",
        "algo",
        "step",
        "rng",
        "task",
        "obs_dim",
        "act_dim",
        "threshold",
        "store_id",
    ):
        assert key in ck, key
    assert ck["step"] == 60 and ck["algo"] == "presa" and ck["algo_state"]["reference"] is not None
    # the logged ν is the mean over the last interval; the PID rule moves it a little every step
    assert isinstance(ck["nu"], float) and ck["nu"] == pytest.approx(recs[-1]["train/nu"], rel=0.05)


def test_load_actor_normalises_inside(base_run: Path, toy_store: Path) -> None:
    actor = load_actor(base_run)
    obs = np.asarray(open_store(toy_store).observations)[:7]
    act = actor(obs)
    assert act.shape == (7, 1) and act.dtype == np.float32 and np.all(np.abs(act) <= 1)
    assert np.allclose(actor(obs[0]), act[0])
    ck = load_checkpoint(base_run / "checkpoints" / "final.pt")
    norm = (torch.from_numpy(obs) - ck["obs_mean"]) / ck["obs_std"]
    with torch.no_grad():
        want = actor.policy.mean_action(norm).numpy()
    assert np.array_equal(act, want)
    assert actor.task.name == "Toy-v0" and actor.threshold == 4.0 and (actor.obs_dim, actor.act_dim) == (2, 1)
    assert actor.meta["step"] == 60 and actor.meta["algo"] == "presa"
    with pytest.raises(FeedbackgenError, match="observations of size 2"):
        actor(np.zeros((3, 5)))
    # a periodic checkpoint file works too
    assert load_actor(base_run / "checkpoints" / "step_0000020.pt").meta["step"] == 20


def test_same_seed_same_weights_other_seed_differs(base_run: Path, toy_store: Path, tmp_path: Path) -> None:
    train(cfg_of(), toy_store, tmp_path / "again")
    a = load_checkpoint(base_run / "checkpoints" / "final.pt")
    b = load_checkpoint(tmp_path / "again" / "checkpoints" / "final.pt")
    assert_same_state(a["policy"], b["policy"])
    assert_same_state(a["optimizer"], b["optimizer"])
    train(cfg_of(seed=1, total_steps=25), toy_store, tmp_path / "other")
    c = load_checkpoint(tmp_path / "other" / "checkpoints" / "final.pt")
    assert not torch.equal(a["policy"]["head.weight"], c["policy"]["head.weight"])


class Interrupt:
    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self, ev: TrainEvent) -> None:
        if ev.step == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {
            "policy": "gaussian",
            "nu_rule": "pid",
            "pid_kd": 0.5,
            "zref_mode": "kl",
            "dropout": 0.1,
            "total_steps": 50,
        },
    ],
)
def test_resume_after_interrupt_is_bit_identical(
    variant: dict, base_run: Path, toy_store: Path, tmp_path: Path
) -> None:
    cfg = cfg_of(**variant)
    if variant:
        full = tmp_path / "full"
        train(cfg, toy_store, full)
    else:
        full = base_run
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, toy_store, cut, callback=Interrupt(47 if cfg.total_steps > 47 else 33))
    assert not (cut / "checkpoints" / "final.pt").exists()
    result = resume(cut)
    assert result.resumed_from == (40 if cfg.total_steps > 47 else 20)
    a = load_checkpoint(full / "checkpoints" / "final.pt")
    b = load_checkpoint(cut / "checkpoints" / "final.pt")
    for key in ("policy", "optimizer", "algo_state", "rng", "step", "nu", "zref"):
        assert_same_state(a[key], b[key], key)
    strip = [{k: v for k, v in r.items() if k != "train/steps_per_s"} for r in records(full)]
    assert [{k: v for k, v in r.items() if k != "train/steps_per_s"} for r in records(cut)] == strip
    assert json.loads((cut / "run.json").read_text())["resumes"][0]["from_step"] == result.resumed_from


def test_resume_extends_a_finished_run_exactly(base_run: Path, toy_store: Path, tmp_path: Path) -> None:
    short = tmp_path / "short"
    train(cfg_of(total_steps=40), toy_store, short)
    again = resume(short)
    assert again.already_complete and again.step == 40
    with pytest.raises(FeedbackgenError, match="cannot change alpha when resuming"):
        resume(short, overrides={"alpha": 0.5})
    resume(short, overrides={"total_steps": 60})
    a = load_checkpoint(base_run / "checkpoints" / "final.pt")
    b = load_checkpoint(short / "checkpoints" / "final.pt")
    assert_same_state(a["policy"], b["policy"])
    assert_same_state(a["algo_state"], b["algo_state"])
    assert yaml.safe_load((short / "config.yaml").read_text())["total_steps"] == 60


def nu_series(run: Path) -> list[float]:
    return [r["train/nu"] for r in records(run) if "train/nu" in r]


def test_nu_rises_while_constraint_violated(toy_store: Path, tmp_path: Path) -> None:
    # plain dual ascent; with η = 0.25 and one slope β_s = 1 this store's ceiling is 0.647, so δ = 0.64
    # is attainable but far above an untrained policy's g ≈ ½: ν must climb every interval
    train(cfg_of(delta=0.64, delta_margin=0.0, nu_rule="sgd", nu_lr=0.05, eta=0.25, beta_safe=None,
                 total_steps=50, checkpoint_every=0), toy_store, tmp_path / "up")
    nus = nu_series(tmp_path / "up")
    assert nus[0] > 1.0 and all(b > a for a, b in zip(nus, nus[1:], strict=False))
    recs = records(tmp_path / "up")
    g = [r["train/g"] for r in recs if "train/g" in r]
    assert max(g) < 0.64
    assert recs[-1]["train/delta"] == pytest.approx(0.64) and 0.64 < recs[-1]["train/g_ceiling"] < 0.66


def test_unattainable_delta_is_refused(toy_store: Path, tmp_path: Path) -> None:
    # δ = 0.99 is above the attainable ceiling of g on this store: refused when alignment starts
    with pytest.raises(FeedbackgenError, match=r"delta 0.99 cannot be met .* ceiling of g is 0\.8"):
        train(cfg_of(delta=0.99, total_steps=50, checkpoint_every=0), toy_store, tmp_path / "no")


def test_default_delta_is_halfway_to_the_ceiling(toy_store: Path, tmp_path: Path) -> None:
    train(cfg_of(total_steps=50, checkpoint_every=0), toy_store, tmp_path / "auto")
    last = records(tmp_path / "auto")[-1]
    assert last["train/delta"] == pytest.approx(0.5 + 0.5 * (last["train/g_ceiling"] - 0.5), abs=1e-6)


def test_nu_falls_to_zero_once_constraint_holds(toy_store: Path, tmp_path: Path) -> None:
    # δ = 0.05 is met at once (g ≈ ½): ν must fall and reach 0
    train(
        cfg_of(delta=0.05, nu_init=3.0, nu_rule="sgd", nu_lr=0.2, total_steps=80, checkpoint_every=0),
        toy_store,
        tmp_path / "down",
    )
    nus = nu_series(tmp_path / "down")
    assert nus[0] < 3.0 and all(b <= a for a, b in zip(nus, nus[1:], strict=False)) and nus[-1] == 0.0


def test_direction_of_effect_preferences_push_up_safety_holds_down(toy_store: Path, tmp_path: Path) -> None:
    """Toy: reward and cost both rise with the action. Preferences alone should raise the policy's
    actions; a strong safety constraint should lower them and raise g_θ."""
    base = dict(
        bc_steps=60,
        total_steps=140,
        checkpoint_every=0,
        log_every=20,
        bc_batch=128,
        lr=3e-3,
        dropout=0.0,
        align_lr=2e-3,
        warmup_steps=1,
        alpha=1.0,
    )
    obs = np.asarray(open_store(toy_store).observations)
    train(cfg_of(**base, nu_init=0.0, delta=0.01), toy_store, tmp_path / "pref")
    train(cfg_of(**base, nu_init=20.0, nu_lr=1e-6, delta=0.8), toy_store, tmp_path / "safe")
    a_pref = float(load_actor(tmp_path / "pref")(obs).mean())
    a_safe = float(load_actor(tmp_path / "safe")(obs).mean())
    data_mean = float(np.asarray(open_store(toy_store).actions).mean())
    assert a_pref > data_mean + 0.3
    assert a_safe < a_pref - 0.5
    pref_last, safe_last = records(tmp_path / "pref")[-1], records(tmp_path / "safe")[-1]
    assert pref_last["train/pref_acc"] > 0.8
    assert safe_last["train/g"] > pref_last["train/g"] + 0.2


def test_run_directory_is_never_reused(base_run: Path, toy_store: Path) -> None:
    before = (base_run / "metrics.jsonl").read_bytes()
    with pytest.raises(FeedbackgenError, match="already exists and runs are never reused"):
        train(cfg_of(), toy_store, base_run)
    assert (base_run / "metrics.jsonl").read_bytes() == before


def test_threshold_not_in_store_creates_nothing(toy_store: Path, tmp_path: Path) -> None:
    with pytest.raises(FeedbackgenError, match="threshold 5 is not in the store"):
        train(cfg_of(threshold=5.0), toy_store, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_bc_all_and_bf16_run(toy_store: Path, tmp_path: Path) -> None:
    r = train(cfg_of(algo="bc_all", total_steps=20, checkpoint_every=0), toy_store, tmp_path / "bc")
    assert set(r.metrics) == {"step", "train/bc_loss", "train/lr", "train/steps_per_s"}
    assert load_actor(tmp_path / "bc").meta["algo"] == "bc_all"
    r = train(cfg_of(precision="bf16", total_steps=30, checkpoint_every=0), toy_store, tmp_path / "bf16")
    assert np.isfinite(r.metrics["train/pref_loss"]) and np.isfinite(r.metrics["train/g"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error(toy_store: Path, tmp_path: Path) -> None:
    with pytest.raises(FeedbackgenError, match="no CUDA GPU is available"):
        train(cfg_of(device="cuda"), toy_store, tmp_path / "gpu")
