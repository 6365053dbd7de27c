"""`presa train` through Typer's CliRunner: exit codes, one-line errors, files, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from presa_cli.presa_app import app
from tiny_run import TINY, tiny_for
from typer.testing import CliRunner

from presa.checkpoint import load_checkpoint

runner = CliRunner()
SETS = [x for k, v in TINY.items() if k != "threshold" for x in ("--set", f"{k}={v}".replace(" ", ""))]


def sets_for(algo: str) -> list[str]:
    """SETS with only the keys ``algo`` reads."""
    return [x for k, v in tiny_for(algo).items() if k != "threshold"
            for x in ("--set", f"{k}={v}".replace(" ", ""))]


def invoke(*args: str):
    return runner.invoke(app, ["train", *args, "--no-progress"])


def one_red_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_train_then_resume_extension(toy_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = invoke(
        "--data",
        str(toy_store),
        "--threshold",
        "4",
        "--seed",
        "0",
        "--out",
        str(out),
        *SETS,
        "--set",
        "total_steps=40",
    )
    assert r.exit_code == 0, r.output
    assert "train/pref_loss" in r.stdout and str(out) in r.stdout
    for name in ("config.yaml", "run.json", "metrics.jsonl", "curves.png", "checkpoints/final.pt"):
        assert (out / name).is_file(), name
    assert json.loads((out / "run.json").read_text())["seed"] == 0
    # resuming a finished run is a no-op that says so
    r = runner.invoke(app, ["train", "--resume", str(out), "--no-progress"])
    assert r.exit_code == 0 and "already complete" in r.stdout
    # extending it continues exactly where it stopped
    r = runner.invoke(app, ["train", "--resume", str(out), "--set", "total_steps=60", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out / "checkpoints" / "final.pt")["step"] == 60
    ref = tmp_path / "ref"
    assert (
        invoke(
            "--data", str(toy_store), "--threshold", "4", "--seed", "0", "--out", str(ref), *SETS
        ).exit_code
        == 0
    )
    a = load_checkpoint(ref / "checkpoints" / "final.pt")["policy"]
    b = load_checkpoint(out / "checkpoints" / "final.pt")["policy"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_out_is_refused(toy_store: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    line = one_red_line(
        invoke("--data", str(toy_store), "--threshold", "4", "--out", str(tmp_path / "taken"), *SETS)
    )
    assert "already exists" in line and "--resume" in line
    assert list((tmp_path / "taken").iterdir()) == []


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--threshold", "4", "--set", "delta=1.5"], "delta must be in (0, 1)"),
        (["--threshold", "4", "--set", "delta=0"], "delta must be in (0, 1)"),
        (["--threshold", "4", "--set", "etaa=0.3"], "unknown config key 'etaa' (did you mean eta"),
        (["--threshold", "5"], "threshold 5 is not in the store (it has 4, 8)"),
        (["--threshold", "4", "--algo", "nope"], "unknown algorithm 'nope'"),
        (["--threshold", "4", "--preset", "medium"], "unknown preset 'medium'"),
        ([], "no cost threshold given"),
    ],
)
def test_bad_config_is_one_red_line(extra: list[str], needle: str, toy_store: Path, tmp_path: Path) -> None:
    line = one_red_line(invoke("--data", str(toy_store), "--out", str(tmp_path / "r"), *extra))
    assert needle in line
    assert not (tmp_path / "r").exists()


def test_bad_store_resume_and_device_errors(toy_store: Path, tmp_path: Path) -> None:
    assert "does not exist" in one_red_line(invoke("--data", str(tmp_path / "none.zarr"), "--threshold", "4"))
    assert "pass --data" in one_red_line(invoke("--threshold", "4"))
    assert "not a presa run directory" in one_red_line(invoke("--resume", str(tmp_path)))
    line = one_red_line(invoke("--resume", str(tmp_path), "--seed", "3"))
    assert "drop --seed" in line
    if not torch.cuda.is_available():
        line = one_red_line(invoke("--data", str(toy_store), "--threshold", "4", "--device", "cuda", *SETS))
        assert "no CUDA GPU" in line


def test_config_file_and_set_precedence(toy_store: Path, tmp_path: Path) -> None:
    # keys bc_all reads (delta and eta, which it does not read, are errors: see below)
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.001\ndropout: 0.1\nalpha: 0.3\n")
    out = tmp_path / "run"
    r = invoke(
        "--data",
        str(toy_store),
        "--threshold",
        "4",
        "--out",
        str(out),
        "--config",
        str(f),
        *sets_for("bc_all"),
        "--set",
        "total_steps=21",
        "--set",
        "lr=0.002",
        "--algo",
        "bc_all",
    )
    assert r.exit_code == 0, r.output
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["lr"], cfg["dropout"], cfg["alpha"], cfg["algo"], cfg["total_steps"]) == (
        0.002,
        0.1,
        0.3,
        "bc_all",
        21,
    )
    # the run's config.yaml holds the keys bc_all reads, and nothing else
    assert "delta" not in cfg and "bc_steps" not in cfg and "hidden" in cfg


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--set", "nu_lr=0.1"],
         "unknown config key 'nu_lr' (only presa, two_stage read it) for algorithm bc_safe; "
         "valid keys: algo, threshold, seed,"),
        (["--set", "nu_lrr=0.1"], "unknown config key 'nu_lrr' (did you mean nu_lr"),
        (["--set", "delta=0.9", "--set", "bc_steps=5"], "unknown config keys 'delta' (only presa read it); "
                                                        "'bc_steps' (only binary, cpl, presa,"),
    ],
)
def test_a_key_the_algorithm_does_not_read_is_one_red_line(extra: list[str], needle: str, toy_store: Path,
                                                          tmp_path: Path) -> None:
    """nu_lr is PreSa's (and two_stage's) but not bc_safe's: it used to be ignored without a word."""
    line = one_red_line(invoke("--data", str(toy_store), "--threshold", "4", "--algo", "bc_safe",
                               "--preset", "study", "--out", str(tmp_path / "r"), *extra))
    assert needle in line and "label_sources" in line
    assert not (tmp_path / "r").exists()


def test_a_config_file_key_the_algorithm_does_not_read_is_an_error(toy_store: Path, tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("delta: 0.8\nalpha: 0.3\n")
    line = one_red_line(invoke("--data", str(toy_store), "--threshold", "4", "--algo", "bc_all",
                               "--config", str(f), "--out", str(tmp_path / "r"), *sets_for("bc_all")))
    assert "unknown config key 'delta' (only presa read it) for algorithm bc_all" in line
    # the same file is fine for presa, which reads delta
    r = invoke("--data", str(toy_store), "--threshold", "4", "--config", str(f), "--out", str(tmp_path / "p"),
               *SETS, "--set", "total_steps=21")
    assert r.exit_code == 0, r.output


def test_presets_set_only_the_keys_the_algorithm_reads(toy_store: Path, tmp_path: Path) -> None:
    # the study preset sets nu_lr, bc_steps, pair_batch, ...: bc_safe takes the keys it reads
    out = tmp_path / "bc"
    r = invoke("--data", str(toy_store), "--threshold", "8", "--algo", "bc_safe", "--preset", "study",
               "--out", str(out), *sets_for("bc_safe"), "--set", "total_steps=21")
    assert r.exit_code == 0, r.output
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["algo"] == "bc_safe" and cfg["bc_batch"] == 64 and cfg["threads"] == 1
    assert not {"nu_lr", "bc_steps", "pair_batch", "align_lr"} & set(cfg)


def test_default_out_name(toy_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = invoke(
        "--data",
        str(toy_store),
        "--threshold",
        "8",
        "--seed",
        "3",
        "--algo",
        "bc_all",
        *sets_for("bc_all"),
        "--set",
        "total_steps=5",
    )
    assert r.exit_code == 0, r.output
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("toy-bc_all-k8-s3-")
