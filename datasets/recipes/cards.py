"""Dataset cards and tables of the shipped ``<Task>-mini`` datasets, computed from their files only.

For every folder ``datasets/<Name>/`` (``dataset.json`` + ``data.hdf5``) this writes

- ``README.md``: the card (sizes, reward/cost spread, the frontier metrics per threshold κ,
  per-policy statistics, how the data was made and how to rebuild it);
- ``scatter.png``: episode reward vs cost by behaviour policy, with the thresholds drawn;

and replaces the table between the ``<!-- datasets-table:begin/end -->`` markers of
``datasets/README.md`` and of the repository's ``README.md``.

Frontier metrics (what a useful offline safe-RL dataset needs around its thresholds, as in DSRL):

- near-budget share at κ: episodes with cost in (κ/2, κ] as a share of all episodes;
- best safe reward at κ: the largest normalised reward of an episode with cost ≤ κ (normalised with
  the dataset's own min/max episode reward in ``dataset.json``);
- widest empty cost stretch: the widest interval of [0, 2·κ_max] without an episode cost, as a share
  of 2·κ_max (the ends count as points; κ_max = 40 gives [0, 80], Safety-Gymnasium's 80 gives [0, 160]);
- costs must reach κ_max.

:data:`CRITERIA` are what every shipped dataset must meet (``tests/feedbackgen/test_shipped_datasets.py``
checks them and that the cards agree with the files).

Usage (from the repository root)::

    .venv/bin/python datasets/recipes/cards.py            # every dataset in datasets/
    .venv/bin/python datasets/recipes/cards.py BallRun-mini
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATASETS = ROOT / "datasets"
#: the frontier criteria of a shipped dataset (costs must also reach the largest threshold κ_max; the
#: empty-stretch range is [0, 2·κ_max])
CRITERIA = {"near_budget_share_min": 0.05, "best_safe_rise_min": 0.10, "widest_gap_max": 0.10}
TABLE_BEGIN, TABLE_END = "<!-- datasets-table:begin -->", "<!-- datasets-table:end -->"


def dataset_folders(root: Path = DATASETS) -> list[Path]:
    """The dataset folders (those holding a ``dataset.json``), sorted by name."""
    return sorted(p.parent for p in root.glob("*/dataset.json"))


def episode_stats(folder: Path) -> dict:
    """Everything the card needs from the data file: per-episode reward/cost/length and sizes."""
    from feedbackgen.sources import read_dsrl

    meta = json.loads((folder / "dataset.json").read_text())
    with read_dsrl(folder / meta.get("file", "data.hdf5")) as t:
        ep_r, ep_c = t.episode_returns()
        out = {"reward": np.asarray(ep_r, float), "cost": np.asarray(ep_c, float),
               "length": np.asarray(t.episode_length), "transitions": int(t.n_transitions),
               "episodes": int(t.n_episodes), "obs_dim": int(t.obs_dim), "act_dim": int(t.act_dim)}
    return {"meta": meta, **out}


def frontier_metrics(ep_reward: np.ndarray, ep_cost: np.ndarray, task: dict) -> dict:
    """The frontier metrics of one dataset (see the module docstring) per threshold of ``task``."""
    r, c = np.asarray(ep_reward, float), np.asarray(ep_cost, float)
    lo, hi = float(task["min_episode_reward"]), float(task["max_episode_reward"])
    rn = (r - lo) / (hi - lo) if hi > lo else np.zeros_like(r)
    per = {}
    for k in (float(x) for x in task["thresholds"]):
        safe = c <= k
        per[k] = {"under": float(np.mean(safe)), "near_budget_share": float(np.mean((c > k / 2) & safe)),
                  "best_safe_reward": float(rn[safe].max()) if safe.any() else float("nan")}
    a, b = gap_range(task)
    pts = np.unique(np.concatenate([[a, b], c[(c >= a) & (c <= b)]]))
    return {"per_threshold": per, "widest_gap": float(np.diff(pts).max() / (b - a)), "gap_range": (a, b),
            "max_cost": float(c.max()), "kappa_max": max(per),
            "best_safe_rise": per[max(per)]["best_safe_reward"] - per[min(per)]["best_safe_reward"]}


def gap_range(task: dict) -> tuple[float, float]:
    """The cost range [0, 2·κ_max] in which no empty stretch may be wider than the criterion."""
    return 0.0, 2.0 * max(float(x) for x in task["thresholds"])


def frontier_failures(metrics: dict) -> list[str]:
    """The :data:`CRITERIA` a dataset's metrics miss (empty: it meets them all)."""
    bad = []
    for k, m in metrics["per_threshold"].items():
        if not m["near_budget_share"] >= CRITERIA["near_budget_share_min"]:
            bad.append(f"near-budget share at κ={k:g} is {m['near_budget_share']:.3f} < "
                       f"{CRITERIA['near_budget_share_min']}")
    if not metrics["best_safe_rise"] >= CRITERIA["best_safe_rise_min"]:
        bad.append(f"best safe reward rises by {metrics['best_safe_rise']:.3f} < "
                   f"{CRITERIA['best_safe_rise_min']} from the smallest to the largest κ")
    if not metrics["max_cost"] >= metrics["kappa_max"]:
        bad.append(f"episode costs reach only {metrics['max_cost']:g} < κ_max = {metrics['kappa_max']:g}")
    top = metrics["gap_range"][1]
    if not metrics["widest_gap"] <= CRITERIA["widest_gap_max"]:
        bad.append(f"widest empty cost stretch in [0, {top:g}] is {metrics['widest_gap']:.3f} of {top:g} > "
                   f"{CRITERIA['widest_gap_max']}")
    return bad


def policy_label(spec: str) -> str:
    """Short name of a behaviour policy spec (zoo file stem; ``A→B`` for a switch)."""
    from feedbackgen.collect import switch_parts

    parts = switch_parts(spec)
    if parts:
        return "→".join(policy_label(p) for p in parts)
    if spec.startswith("idm:"):
        return f"idm{spec[4:]}"
    return "random" if spec == "random" else Path(spec.split(":", 1)[-1]).name.removesuffix(".zip")


def _num(x: float, fmt: str = ".0f") -> str:
    return format(x, fmt).replace("-", "−")


def _mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.hdf5")) / 1e6


def card_text(folder: Path, stats: dict | None = None) -> str:
    """The card (``README.md``) of one dataset folder, from its files."""
    s = stats or episode_stats(folder)
    meta, ep_r, ep_c = s["meta"], s["reward"], s["cost"]
    task, coll = meta["task"], meta["collection"]
    fm = frontier_metrics(ep_r, ep_c, task)
    pol_idx = np.asarray(coll["episode_policy"])
    labels = [policy_label(p["spec"]) for p in coll["policies"]]
    data_mb = (folder / meta.get("file", "data.hdf5")).stat().st_size / 1e6
    frames = sorted(p.name for p in folder.glob("*.frames.hdf5"))
    fr = coll.get("frames", {})
    frames_text = (f"; frames for annotation: `{frames[0]}` ({(folder / frames[0]).stat().st_size / 1e6:.1f} "
                   f"MB, every {fr.get('every', '?')}th step of {fr.get('episodes', '?')} episodes)"
                   if frames else "")
    corr = float(np.corrcoef(ep_c, ep_r)[0, 1]) if ep_c.std() > 0 else float("nan")
    thr_rows = "\n".join(
        f"| {k:g} | {m['under']:.1%} ({int(np.sum(ep_c <= k))}) | {m['near_budget_share']:.1%} "
        f"({int(np.sum((ep_c > k / 2) & (ep_c <= k)))}) | {m['best_safe_reward']:.3f} |"
        for k, m in fm["per_threshold"].items())
    fails = frontier_failures(fm)
    verdict = ("meets the frontier criteria" if not fails
               else "MISSES the frontier criteria: " + "; ".join(fails))
    comp = coll.get("config", {}).get("compression")
    comp = f", HDF5 {comp}-compressed, transparent to readers" if comp else ""
    keys = "observations, next_observations, actions, rewards, costs, terminals, timeouts"
    lengths = f"length {s['length'].min()}–{s['length'].max()}, max episode steps {task['max_episode_steps']}"
    gap, rise, top = fm["widest_gap"], fm["best_safe_rise"], fm["gap_range"][1]
    k_lo, k_hi = min(fm["per_threshold"]), max(fm["per_threshold"])
    crit = (f"near-budget share ≥ {CRITERIA['near_budget_share_min']:.0%} at every κ, a rise ≥ "
            f"{CRITERIA['best_safe_rise_min']:g}, costs reaching ≥ {k_hi:g}, no empty "
            f"stretch wider than {CRITERIA['widest_gap_max']:.0%} of {top:g}")
    rows = []
    for i, lab in enumerate(labels):
        m = pol_idx == i
        if m.any():
            rows.append(f"| {lab} | {int(m.sum())} | {_num(ep_r[m].mean(), '.1f')} | {ep_c[m].mean():.1f} |")
    version = meta.get("version") or coll.get("version") or "v1–v2 (unversioned)"
    how = _how_text(meta, folder)
    versions = ", ".join(f"{k} {v}" for k, v in coll.get("versions", {}).items())
    return f"""# {task['name']}

A small offline safe-RL dataset in the DSRL HDF5 layout, collected by this project in
`{task['env_id']}` ({task['suite']}, DSRL task `{task.get('base_task')}`), so that the toolkit works
offline. Version **{version}**. Registered as the task `{task['name']}`:

```bash
feedbackgen make --task {task['name']} --noise 0.1
```

## Contents

| | |
|---|---|
| file | `data.hdf5` ({data_mb:.1f} MB{comp}; DSRL keys: {keys}){frames_text} |
| episodes | {s['episodes']} ({lengths}) |
| transitions | {s['transitions']} |
| observation / action dims | {s['obs_dim']} / {s['act_dim']} |
| episode reward | {_num(ep_r.min(), '.1f')} … {_num(ep_r.max(), '.1f')} (mean {_num(ep_r.mean(), '.1f')}) |
| episode cost | {ep_c.min():.0f} … {ep_c.max():.0f} (mean {ep_c.mean():.1f}, median {np.median(ep_c):.0f}) |
| reward–cost correlation | {corr:.2f} |

The normalisation references in `dataset.json` (min/max episode reward and cost) are this
collection's own; "normalised reward" below uses them.

## Reward–cost frontier

| κ | cost ≤ κ (episodes) | near budget: cost in (κ/2, κ] | best safe normalised reward (cost ≤ κ) |
|---|---|---|---|
{thr_rows}

Widest empty stretch of episode cost within [0, {top:g}]: {gap:.3f} of {top:g} ({gap * top:.0f}).
Best safe reward rises by {rise:.3f} from κ = {k_lo:g} to κ = {k_hi:g}. The dataset {verdict} ({crit}).

![episode reward vs cost, thresholds dashed](scatter.png)

## How it was made

{how}

| policy | episodes | mean reward | mean cost |
|---|---|---|---|
{chr(10).join(rows)}

Library versions: {versions}.

License: Apache-2.0, like the toolkit.
"""


def _how_text(meta: dict, folder: Path) -> str:
    coll = meta["collection"]
    base = meta["task"].get("base_task") or meta["task"]["name"]
    zoo_file = ROOT / "datasets" / "recipes" / "zoo" / base / "zoo.json"
    zoo = json.loads(zoo_file.read_text()) if zoo_file.is_file() else None
    parts = []
    if zoo:
        lims = (f", and cost-limited PPO (λ by dual ascent) for episode cost limits "
                f"{{{', '.join(f'{x:g}' for x in zoo['cost_limits'])}}}" if zoo.get("cost_limits") else "")
        parts.append(f"Behaviour zoo (`datasets/recipes/zoo/{base}/`): stable-baselines3 PPO trained on "
                     f"reward − λ·cost for λ ∈ {{{', '.join(f'{x:g}' for x in zoo['lambdas'])}}}{lims} "
                     f"({zoo['train_steps']} steps each; snapshots at "
                     f"{', '.join(f'{x:.0%}' for x in zoo['snapshots'])} of the steps are kept as policies "
                     "of different skill).")
    idm = [p["spec"] for p in coll["policies"] if p["spec"].startswith("idm:")]
    if idm:
        speeds = ", ".join(s[4:] for s in idm)
        parts.append("Behaviour: no RL. MetaDrive's own `IDMPolicy` (IDM car following, PID lane keeping, "
                     "its routing lane changes) drives the ego vehicle with target speeds "
                     f"{{{speeds}}} km/h (`idm:SPEED` policies of `feedbackgen.collect`). DSRL's velocity "
                     "cost 0.01·max(0, v − 10 km/h) per step makes the episode cost grow with the target "
                     "speed, and the reward (progress along the route) grows with it.")
    cap = coll.get("config", {}).get("max_episode_steps")
    if cap:
        parts.append(f"Episodes are cut at {cap} steps (the DSRL task's limit is longer): the dataset's "
                     f"`max_episode_steps` is {cap}, and evaluation on it truncates there.")
    noise = coll.get("noise", {}).get("std_range", [0, 0])
    switch = [p for p in coll["policies"] if p["spec"].startswith("switch:")]
    text = (f"Collection: `feedbackgen.collect`, seed {coll['seed']}, deterministic actions plus per-episode "
            f"Gaussian noise with std drawn from U({noise[0]:g}, {noise[1]:g}) × action half-range, clipped.")
    if switch:
        lo, hi = coll["config"].get("switch_range", [0.0, 1.0])
        text += (f" {len(switch)} within-episode mixtures `A→B` run policy A until a switch step drawn "
                 f"uniformly in [{lo:g}, {hi:g}] × the episode limit, then B: "
                 + ("cautious → reckless gives every intermediate episode cost, with reward rising with cost."
                    if zoo else "slow → fast and fast → slow give intermediate episode costs."))
    sel = coll.get("selection")
    if sel:
        bands = ", ".join(f"({_num(b[0], 'g')}, {b[1]:g}]: {n}/{b[2]}" for b, n in
                          zip(sel["bands"], sel["kept_per_band"], strict=True))
        single = ("a single zoo member (the reckless majority stays)" if zoo
                  else "a single behaviour policy")
        text += (f" Over-collected {sel['pool_episodes']} episodes, then kept {sel['kept_episodes']}: every "
                 f"episode of {single} and, of the mixture episodes, "
                 f"a cost-stratified density filter ({sel['rule']}); kept/target per cost band: {bands}.")
    parts.append(text)
    build = meta.get("build")
    if build:
        cpu = ", ".join(f"{k} {v:.0f} s" for k, v in build["cpu_seconds"].items())
        parts.append(f"Rebuild (from the repository root; CPU time of the last build: {cpu}, "
                     f"{build['workers']} worker(s)); every dataset: `{build['all_command']}`:\n\n"
                     f"```bash\n{build['command']}\n```\n\n"
                     "Collection is reproducible from the seed (independent of the number of workers)"
                     + ("; zoo training is seeded but PPO on another machine/library version may differ "
                        "slightly." if zoo else "."))
    return "\n\n".join(parts)


def write_scatter(folder: Path, stats: dict | None = None) -> Path:
    """``scatter.png``: episode reward vs cost by behaviour policy, thresholds as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = stats or episode_stats(folder)
    meta, ep_r, ep_c = s["meta"], s["reward"], s["cost"]
    task, coll = meta["task"], meta["collection"]
    pol_idx = np.asarray(coll["episode_policy"])
    labels = [policy_label(p["spec"]) for p in coll["policies"]]
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=110)
    cmap = plt.get_cmap("viridis", max(2, len(labels)))
    for i, lab in enumerate(labels):
        m = pol_idx == i
        if m.any():
            ax.scatter(ep_c[m], ep_r[m], s=8, alpha=0.7, color=cmap(i), label=lab,
                       marker="x" if "→" in lab else "o", linewidths=0.8)
    for kappa in task["thresholds"]:
        ax.axvline(kappa, color="grey", lw=0.8, ls="--")
        ax.text(kappa, 1.0, f"κ={kappa:g}", transform=ax.get_xaxis_transform(), fontsize=7, ha="center",
                va="bottom", color="grey")
    ax.set_xlabel("episode cost")
    ax.set_ylabel("episode reward")
    ax.set_title(f"{task['name']}: {len(ep_r)} episodes ({task['env_id']})", pad=14)
    ax.legend(fontsize=5.5, ncol=3, loc="lower right", markerscale=1.5)
    fig.tight_layout()
    tmp = folder / ".scatter.png.tmp"
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(folder / "scatter.png")
    return folder / "scatter.png"


def table_rows(folders: list[Path], stats: dict[Path, dict] | None = None, link_prefix: str = "") -> str:
    """The markdown table of the datasets (one row each) for the READMEs."""
    head = ("| dataset | version | env | episodes | transitions | episode reward | episode cost | "
            "cost ≤ κ | near budget (κ/2, κ] | best safe reward | widest empty cost stretch | files |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [head]
    for f in folders:
        s = (stats or {}).get(f) or episode_stats(f)
        meta, r, c = s["meta"], s["reward"], s["cost"]
        fm = frontier_metrics(r, c, meta["task"])
        per = fm["per_threshold"]
        ks = "/".join(f"{k:g}" for k in per)
        under = " / ".join(format(m["under"], ".0%") for m in per.values())
        near = " / ".join(format(m["near_budget_share"], ".0%") for m in per.values())
        best = " / ".join(format(m["best_safe_reward"], ".2f") for m in per.values())
        rows.append(
            f"| [{f.name}]({link_prefix}{f.name}/README.md) | {meta.get('version', 'v1–v2')} | "
            f"{meta['task']['env_id']} | {s['episodes']} | {s['transitions']:,} | "
            f"{_num(r.min())} … {_num(r.max())} | "
            f"{c.min():.0f} … {c.max():.0f} | {under} (κ {ks}) | {near} | {best} | {fm['widest_gap']:.2f} | "
            f"{_mb(f):.1f} MB |")
    return "\n".join(rows)


def splice_table(text: str, table: str) -> str:
    """``text`` with the part between the table markers replaced by ``table``."""
    a, b = text.index(TABLE_BEGIN) + len(TABLE_BEGIN), text.index(TABLE_END)
    return text[:a] + "\n" + table + "\n" + text[b:]


def readme_texts(folders: list[Path] | None = None, stats: dict[Path, dict] | None = None) -> dict[Path, str]:
    """The two READMEs (``datasets/README.md``, ``README.md``) with their dataset tables regenerated."""
    folders = folders if folders is not None else dataset_folders()
    out = {}
    for path, prefix in ((DATASETS / "README.md", ""), (ROOT / "README.md", "datasets/")):
        text = path.read_text()
        if TABLE_BEGIN in text:
            out[path] = splice_table(text, table_rows(folders, stats, prefix))
    return out


def write_all(names: list[str] | None = None) -> list[Path]:
    """Cards and scatter plots of the named datasets (default: all), then both README tables."""
    folders = dataset_folders()
    chosen = [f for f in folders if not names or f.name in names or f.name.removesuffix("-mini") in names]
    stats = {f: episode_stats(f) for f in folders}
    written = []
    for f in chosen:
        (f / "README.md").write_text(card_text(f, stats[f]))
        write_scatter(f, stats[f])
        written.append(f / "README.md")
    for path, text in readme_texts(folders, stats).items():
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="datasets (folder names, e.g. BallRun-mini); default: all")
    args = parser.parse_args(argv)
    for p in write_all(args.names):
        print(p.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
