"""Trainable deep networks to depth 100 (issue 21, item 2): a learning rate tuned per depth on a
validation split, against the fixed-eta curve, and the remedies where plain SGD trains at no eta.

    python data/scripts/depth_trainability.py [--runs runs] [--results docs/results.md] [--figures docs/figures/deep]

For every depth in DEPTHS and every eta in ETAS, runs ``data/configs/depth_tuned_base.toml`` (relu, He
init, width 32, digits, SGD batch 32, 4,000 steps) with ``task.holdout = "validation"`` and
``task.n_test = 100``: it fits the first 400 of the 500 training digits and is scored on the other 100
(the test set is never looked at), VALIDATION_REPLICAS replicas. Per depth the eta with the highest
mean final validation accuracy (a diverged replica scores 0) is chosen and rerun on the real split
(500 training, 1,000 test digits, 4 replicas); the fixed-eta curve is the same config at eta = 0.05,
one of the grid's values, so that where 0.05 is chosen the two share one file. Where plain SGD trains
at no tested eta (no eta whose validation run reaches a mean final training accuracy >= THRESHOLD) or
the tuned rerun does not, the remedy that keeps the network an MLP is run the same way:
``depth_tuned_tanh.toml``, tanh with sigma_w^2 = 1 and zero biases at initialisation (the critical
point of tanh, the Gaussian version of the dynamical-isometry line), eta tuned on the same split.
The second remedy, gradient clipping, is ``depth_tuned_clip.toml``: the relu config with
``training.clip_norm = CLIP_NORM`` (the loss gradient of each step rescaled to norm <= 1), run at
CLIP_DEPTHS, the depths where plain relu does not train within 4,000 steps at any eta (64, 100), its
eta tuned on the same split over CLIP_ETAS, which reaches larger etas than ETAS (clipping is what
should make them stable). CLIP_NORM is of the order of the median batch-gradient norm at
initialisation on the validation split, measured by ``gradient_norms`` at depth 8 and at CLIP_DEPTHS
and printed in the block.
Every run file goes to ``runs/depth_tuned/`` (a complete file is kept, an interrupted one resumed, a
diverged one kept as the result it is); the script rewrites the block between
``<!-- depth_trainability:begin -->`` and ``<!-- depth_trainability:end -->`` of the results page.

Expected from the seed before the runs (Lin et al., ../shared/papers/companions.md section B: trained
networks up to 100 layers have an optimal depth): with its eta tuned, depths beyond 16 train at least
partly (the fixed eta = 0.05 curve of ``deep_depth_sweep.toml`` does not train beyond ~16), and the
tuned test accuracy has its maximum at a moderate depth (between 2 and 16), not at depth 1 nor at the
deepest trained depth. Gradient clipping (stated before its runs, from the issue: clipping is the
standard remedy for the exploding steps of deep nets): with clipping and its eta tuned, relu depths 64
and 100 train at least partly (some replicas reach training accuracy 0.9), more than plain relu's tuned
runs at 4,000 steps (0 of 4 at both depths), and the chosen etas are larger than plain relu's 0.005.

"Trains": the mean final training accuracy over the replicas is >= THRESHOLD = 0.9, a diverged
replica counting as 0. Plateau: the change of the training accuracy over the second half of the run
(step 2,000 to 4,000), mean over replicas. Intervals: 95 % percentile bootstrap over replicas
(independent initialisations and batch draws) of the mean of the replicas that did not diverge;
differences between depths resample each depth's replicas independently.
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEPTHS = (1, 2, 4, 8, 16, 32, 64, 100)
ETAS = (0.005, 0.015, 0.05, 0.15)
FIXED_ETA = 0.05
VALIDATION_REPLICAS = 2
N_VALIDATION = 100
THRESHOLD = 0.9
PLATEAU = 0.02  # a training accuracy still rising by more than this over the second half has not plateaued
LONG_FACTOR = 4  # a tuned run that has not plateaued is rerun this many times longer
FAMILIES = {"relu": "depth_tuned_base.toml", "tanh": "depth_tuned_tanh.toml", "clip": "depth_tuned_clip.toml"}
LABELS = {"relu": "relu, He init", "tanh": "tanh, sigma_w^2 = 1 (remedy)", "clip": "relu, clip_norm = 1 (remedy)"}
# the depths plain relu does not train within 4,000 steps at any eta; 32 (which it trains at eta 0.005,
# fully only after 16,000 steps) was left out to keep the family within ~40 min on a shared 2-core machine
CLIP_DEPTHS = (64, 100)
CLIP_NORM = 1.0  # must equal depth_tuned_clip.toml's training.clip_norm (checked in main)
CLIP_ETAS = (0.015, 0.05, 0.15, 0.5)
NORM_DEPTHS = (8,) + CLIP_DEPTHS  # where the initial gradient norm is measured (clip_norm is set at depth 8)
NORM_BATCHES = 25  # batches per replica of the initial-gradient-norm measurement
BEGIN, END = "<!-- depth_trainability:begin -->", "<!-- depth_trainability:end -->"
N_BOOT = 4000


def variant(base: dict, *, depth: int, eta: float, validation: bool, replicas: int | None = None,
            n_validation: int = N_VALIDATION, steps: int | None = None):
    """The base config (its tables, ``to_mapping()``) at ``depth`` and ``eta``, on the validation split
    (the last ``n_validation`` training samples held out) or on the real one."""
    from dynsim.kinds import config_from_mapping

    tables = {name: dict(values) for name, values in base.items()}
    tables["model"]["depth"] = int(depth)
    tables["training"]["eta"] = float(eta)
    if replicas is not None:
        tables["run"]["replicas"] = int(replicas)
    if steps is not None:
        tables["run"]["steps"] = int(steps)
    if validation:
        tables["task"].update(holdout="validation", n_test=int(n_validation))
    return config_from_mapping(tables)


def ensure(config, path) -> Path:
    """``kinds.ensure_run`` keeping a diverged run (some replicas frozen: on_divergence = 'freeze') as the
    result it is."""
    from dynsim.kinds import ensure_run

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return ensure_run(config, path, keep_diverged=True)


def read_run(path) -> dict:
    """Per replica: final training and test (or validation) accuracy, the training accuracy at the
    record nearest half the steps, and whether the replica diverged (NaN records from there on)."""
    from dynsim.store import RunReader

    with RunReader(path) as rd:
        steps = rd.steps
        train, test = rd.observable("accuracy_train"), rd.observable("accuracy_test")
        failed = np.asarray(rd.file["status/replica_failed_step"][()])
    half = int(np.argmin(np.abs(steps - steps[-1] / 2)))
    diverged = (failed >= 0) | ~np.isfinite(train[-1]) | ~np.isfinite(test[-1])
    return dict(train=np.where(diverged, np.nan, train[-1]), test=np.where(diverged, np.nan, test[-1]),
                train_half=np.where(diverged, np.nan, train[half]), diverged=diverged)


def _scored(values) -> float:
    """Mean over replicas with a diverged replica (NaN) counted as 0."""
    return float(np.mean(np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)))


def trains(run: dict, threshold: float = THRESHOLD) -> bool:
    return _scored(run["train"]) >= threshold


def run_path(runs: Path, family: str, depth: int, eta: float, validation: bool, long: bool = False) -> Path:
    split = "val" if validation else "test_long" if long else "test"
    return Path(runs) / "depth_tuned" / f"{family}_d{depth:03d}_eta{eta:g}_{split}.h5"


def rising(run: dict) -> float:
    """How much the mean training accuracy rose over the second half of a run (NaN if every replica diverged)."""
    return float(np.nanmean(run["train"] - run["train_half"])) if not run["diverged"].all() else float("nan")


def still_rising(run: dict) -> bool:
    """Not plateaued: the training accuracy rose by more than PLATEAU over the second half and has room
    left to rise (a mean that has reached 1 - PLATEAU has nowhere further to go)."""
    return rising(run) > PLATEAU and float(np.nanmean(run["train"])) < 1.0 - PLATEAU


def tune(base: dict, family: str, depths, etas, runs, *, validation_replicas=VALIDATION_REPLICAS,
         final_replicas=None, n_validation=N_VALIDATION, fixed_eta=None, log=print) -> dict:
    """Per depth: the validation runs of every eta, the chosen eta, its rerun on the real split, and
    (``fixed_eta``) the run at that eta on the real split. ``final_replicas``: the base config's if None."""
    import time

    out = {}
    for depth in depths:
        started = time.process_time()
        validation = {}
        for eta in etas:
            cfg = variant(base, depth=depth, eta=eta, validation=True, replicas=validation_replicas,
                          n_validation=n_validation)
            validation[eta] = read_run(ensure(cfg, run_path(runs, family, depth, eta, True)))
        # best mean validation accuracy, a diverged replica scoring 0; a tie goes to the smaller eta
        chosen = max(etas, key=lambda e: (_scored(validation[e]["test"]), -e))
        row = dict(validation=validation, eta=chosen,
                   trains_any=any(trains(v) for v in validation.values()))
        for name, eta in (("tuned", chosen), ("fixed", fixed_eta)):
            if eta is None:
                continue
            cfg = variant(base, depth=depth, eta=eta, validation=False, replicas=final_replicas)
            row[name] = read_run(ensure(cfg, run_path(runs, family, depth, eta, False)))
        if still_rising(row["tuned"]):  # not plateaued: the tuned eta again, LONG_FACTOR times longer
            steps = int(base["run"]["steps"]) * LONG_FACTOR
            cfg = variant(base, depth=depth, eta=chosen, validation=False, replicas=final_replicas, steps=steps)
            row["long"] = read_run(ensure(cfg, run_path(runs, family, depth, chosen, False, long=True)))
            row["long_steps"] = steps
        out[depth] = row
        log(f"{family} depth {depth}: eta {chosen:g}, validation "
            + ", ".join(f"{e:g}: {_scored(v['test']):.3f}" for e, v in validation.items())
            + f"; tuned train {_scored(row['tuned']['train']):.3f} test {np.nanmean(row['tuned']['test']):.3f}"
            + f" ({time.process_time() - started:.0f} CPU-s)")
    return out


def gradient_norms(base: dict, depth: int, *, replicas: int = 4, batches: int = NORM_BATCHES,
                   n_validation: int = N_VALIDATION, seed: int = 0) -> np.ndarray:
    """The L2 norms of the batch loss gradient at initialisation, on the validation split's fitted part:
    ``batches`` batches of the base config's batch size (drawn with replacement, seeded) for each of the
    first ``replicas`` initialisations of ``base`` at ``depth``; what ``training.clip_norm`` is set against."""
    from analysis.sharpness import loss_and_gradient
    from dynsim.kinds import make_runner

    config = variant(base, depth=depth, eta=float(base["training"]["eta"]), validation=True, replicas=replicas,
                     n_validation=n_validation)
    sim = make_runner(config)
    x, labels = sim.data.x_train, sim.labels_train
    batch = config.training.effective_batch(x.shape[0])
    rng = np.random.default_rng([seed, depth])
    norms = []
    for theta in sim.initial_params():
        for _ in range(batches):
            members = rng.integers(0, x.shape[0], batch)
            norms.append(float(np.linalg.norm(loss_and_gradient(sim.arch, theta, x[members], labels[members])[1])))
    return np.asarray(norms)


def remedy_depths(relu: dict) -> list[int]:
    """Depths where plain SGD trains at no tested eta, or its tuned rerun does not train."""
    return [d for d, row in relu.items() if not row["trains_any"] or not trains(row["tuned"])]


def interval(values, seed=0):
    """Mean of the finite values and its 95 % percentile bootstrap interval (NaN, NaN with < 2 values)."""
    from analysis.blocks import bootstrap_mean

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 1:
        return float(v[0]), np.nan, np.nan
    return bootstrap_mean(v, n_boot=N_BOOT, seed=seed)


def difference(a, b, seed=0):
    """mean(a) - mean(b) over finite replicas, bootstrap resampling a's and b's replicas independently."""
    from analysis.blocks import bootstrap_difference

    return bootstrap_difference(a, b, n_boot=N_BOOT, seed=seed)


def best_depth(rows: dict, key: str = "tuned") -> int:
    """The depth of the highest mean test accuracy among the depths whose ``key`` run trains."""
    trained = [d for d, row in rows.items() if key in row and trains(row[key])]
    return max(trained, key=lambda d: np.nanmean(rows[d][key]["test"])) if trained else None


def _cell(t):
    mean, low, high = t
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.3f}" if not np.isfinite(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _run_cells(run: dict) -> str:
    n, bad = run["train"].size, int(run["diverged"].sum())
    ok = int(np.sum(np.nan_to_num(run["train"], nan=0.0) >= THRESHOLD))
    plateau = np.nanmean(run["train"] - run["train_half"]) if bad < n else np.nan
    return (f"{_cell(interval(run['train']))} | {_cell(interval(run['test']))} | "
            f"{'yes' if trains(run) else 'no'} ({ok}/{n}{f', {bad} diverged' if bad else ''}) | "
            + (f"{plateau:+.3f}" if np.isfinite(plateau) else "-"))


def _validation_cell(row: dict) -> str:
    return ", ".join(("**" if eta == row["eta"] else "") + f"{_scored(v['test']):.3f}" + ("**" if eta == row["eta"]
                                                                                            else "")
                     for eta, v in row["validation"].items())


def markdown(results: dict, *, etas=ETAS, fixed_eta=FIXED_ETA, source="runs/depth_tuned/", clip_etas=CLIP_ETAS,
             norms=None) -> str:
    relu = results["relu"]
    depths = list(relu)
    first = relu[depths[0]]
    n_val, n_final = first["validation"][etas[0]]["train"].size, first["tuned"]["train"].size
    lines = [BEGIN, "", f"Generated by `python data/scripts/depth_trainability.py` from `{source}`: relu MLPs of width "
             "32 (He init, biases) on the digits, SGD batch 32, 4,000 steps (256 epochs). The learning rate is "
             f"chosen per depth from eta in {{{', '.join(f'{e:g}' for e in etas)}}} by the final accuracy on a "
             "validation split carved out of the training data (`task.holdout = \"validation\"`: fit on 400 of the "
             f"500 training digits, score on the other 100; {n_val} replicas per eta, a diverged replica scoring 0), "
             f"then rerun on the real split (500 training, 1,000 test digits, {n_final} replicas). Accuracies: mean "
             "[95% bootstrap interval over the replicas that did not diverge] at the end. **Trains**: mean final "
             f"training accuracy >= {THRESHOLD:g} (a diverged replica counting as 0; in brackets the replicas "
             "reaching it). **Plateau**: training accuracy at the end minus at step 2,000 (near 0: it has "
             "plateaued).", "",
             f"| depth | validation acc. at eta = {' / '.join(f'{e:g}' for e in etas)} (chosen in bold) | chosen eta | "
             "tuned: train acc. | tuned: test acc. | tuned: trains | tuned: plateau | "
             f"eta = {fixed_eta:g}: train acc. | eta = {fixed_eta:g}: test acc. | eta = {fixed_eta:g}: trains | "
             f"eta = {fixed_eta:g}: plateau |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for depth, row in relu.items():
        lines.append(f"| {depth} | {_validation_cell(row)} | {row['eta']:g} | {_run_cells(row['tuned'])} | "
                     f"{_run_cells(row['fixed'])} |")
    no_eta = [d for d, r in relu.items() if not r["trains_any"]]
    lines += ["", f"- Depths that train, tuned eta: {_depth_list(relu, 'tuned')}; at eta = {fixed_eta:g}: "
                  f"{_depth_list(relu, 'fixed')}. Depths at which no validation run (400 fitted digits, "
                  f"{n_val} replicas) reached the threshold at any tested eta: {', '.join(map(str, no_eta)) or 'none'}."]
    lines += _rising_lines(results)
    lines += _optimum_lines(relu, "relu, tuned eta")
    lines += expectation(relu)
    remedy = results.get("tanh") or {}
    if remedy:
        lines += ["", "**Remedy** at the depths where no relu validation run reaches the threshold at any tested eta, or "
                      "the tuned rerun does not: `depth_tuned_tanh.toml`, tanh with W ~ "
                      "N(0, 1/fan_in) and zero biases at initialisation (sigma_w^2 = 1, sigma_b^2 = 0: the critical "
                      "point of tanh; Gaussian, so not the orthogonal dynamical isometry), eta tuned the same way.", ""]
        lines += _remedy_table(remedy, relu, etas, "tuned")
        lines += ["", f"- Depths the remedy trains: {_depth_list(remedy, 'tuned')} (of "
                      f"{', '.join(map(str, remedy))})."]
    lines += _clip_lines(results, norms or {}, clip_etas)
    lines += _long_lines(results)
    lines += ["", END]
    return "\n".join(lines)


def _remedy_table(rows: dict, relu: dict, etas, relu_label: str) -> list[str]:
    """A remedy's table: per depth its validation accuracies, chosen eta, tuned run, and its test accuracy
    minus plain relu's tuned run at the same depth."""
    lines = [f"| depth | validation acc. at eta = {' / '.join(f'{e:g}' for e in etas)} | chosen eta | "
             f"train acc. | test acc. | trains | plateau | test acc. minus relu's ({relu_label}) |",
             "|---|---|---|---|---|---|---|---|"]
    for depth, row in rows.items():
        diff = difference(row["tuned"]["test"], relu[depth]["tuned"]["test"]) if depth in relu else None
        lines.append(f"| {depth} | {_validation_cell(row)} | {row['eta']:g} | {_run_cells(row['tuned'])} | "
                     + (f"{diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]" if diff else "-") + " |")
    return lines


def _clip_lines(results: dict, norms: dict, etas) -> list[str]:
    """The gradient-clipping remedy's table, the measured initial gradient norms, and its expectation."""
    clip, relu = results.get("clip") or {}, results["relu"]
    if not clip:
        return []
    first = clip[min(clip)]
    n_val, n_final = first["validation"][etas[0]]["train"].size, first["tuned"]["train"].size
    lines = ["", f"**Remedy: gradient clipping** at depths {', '.join(map(str, clip))}: `depth_tuned_clip.toml`, "
             f"the relu config with `training.clip_norm = {CLIP_NORM:g}` (the batch loss gradient rescaled to norm "
             f"{CLIP_NORM:g} where it is longer; weight decay and noise are not clipped, none here), eta tuned the "
             f"same way ({n_val} validation replicas per eta, {n_final} on the real split) over "
             f"{{{', '.join(f'{e:g}' for e in etas)}}}, larger etas than the unclipped grid's."]
    if norms:
        cells = "; ".join(f"depth {d}: {np.median(v):.2f} [{np.percentile(v, 25):.2f}, {np.percentile(v, 75):.2f}]"
                          for d, v in norms.items())
        share = {d: float(np.mean(v > CLIP_NORM)) for d, v in norms.items()}
        lines += ["", f"Why clip_norm = {CLIP_NORM:g}: the norm of the batch loss gradient at initialisation "
                      f"(median [quartiles] over {next(iter(norms.values())).size} batches of 32 of the validation "
                      f"split's fitted digits, {NORM_BATCHES} per initialisation), {cells}. {CLIP_NORM:g} is of the order of the "
                      f"median at depth 8 (where plain relu trains at every eta of the grid) and at the clipped "
                      "depths; the share of initial batches it clips: "
                      + ", ".join(f"{share[d]:.0%} at depth {d}" for d in norms) + "."]
    lines += [""] + _remedy_table(clip, relu, etas, "tuned, 4,000 steps")
    lines += ["", f"- Depths clipping trains: {_depth_list(clip, 'tuned')} (of {', '.join(map(str, clip))}, "
                  "4,000 steps; the runs to the plateau below)."]
    lines += clip_expectation(clip, relu)
    return lines


def _best_run(row: dict) -> dict:
    """A row's longest run: the rerun to the plateau where there is one."""
    return row.get("long") or row["tuned"]


def _reached(run: dict) -> int:
    return int(np.sum(np.nan_to_num(run["train"], nan=0.0) >= THRESHOLD))


def clip_expectation(clip: dict, relu: dict) -> list[str]:
    """The clipping expectation stated in the module docstring, checked per depth against the runs."""
    parts = []
    for depth in (d for d in CLIP_DEPTHS if d in clip):
        row, plain = clip[depth], relu[depth]
        with_clip, without = _reached(row["tuned"]), _reached(plain["tuned"])
        ok = with_clip > 0 and with_clip > without and row["eta"] > plain["eta"]
        text = (f"depth {depth}: {with_clip}/{row['tuned']['train'].size} replicas reach {THRESHOLD:g} with clipping, "
                f"{without}/{plain['tuned']['train'].size} without (4,000 steps), at eta {row['eta']:g} against "
                f"{plain['eta']:g}")
        if "long" in row:
            text += (f"; after {row['long_steps']:,} steps {_reached(row['long'])}/{row['long']['train'].size}"
                     + (f" against plain relu's {_reached(plain['long'])}/{plain['long']['train'].size}"
                        if "long" in plain else ""))
        parts.append(text + f" ({'as expected' if ok else 'against the expectation'})")
    if not parts:
        return []
    return ["- Expected before the runs: with clipping and a tuned eta, relu depths 64 and 100 train at least partly, "
            "more replicas than plain relu's tuned runs, at a larger eta. Measured: " + "; ".join(parts) + "."]


def expectation(rows: dict) -> list[str]:
    """The expectation stated in the module docstring, checked against the tuned relu curve."""
    deep = [d for d in rows if d > 16]
    deep_ok = [d for d in deep if trains(rows[d]["tuned"])]
    partly = [d for d in deep if d not in deep_ok
              and np.any(np.nan_to_num(rows[d]["tuned"]["train"], nan=0.0) >= THRESHOLD)]
    best = best_depth(rows)
    moderate = best is not None and 2 <= best <= 16 and best != max(d for d in rows if trains(rows[d]["tuned"]))
    if moderate:  # resolved only when the interval of its lead over depth 1 excludes 0
        low = difference(rows[best]["tuned"]["test"], rows[min(rows)]["tuned"]["test"])[1]
        verdict = "as expected" + ("" if low > 0 else ", but its lead over depth 1 is not resolved")
    else:
        verdict = "against the expectation"
    return ["- Expected from the seed before the runs: with a tuned eta, depths beyond 16 train at least partly, "
            "and the tuned test accuracy peaks at a moderate depth (2-16). Measured: depths beyond 16 that train: "
            f"{', '.join(map(str, deep_ok)) or 'none'}"
            + (f" (some replicas only: {', '.join(map(str, partly))})" if partly else "")
            + f" ({'as expected' if deep_ok or partly else 'against the expectation'}); the peak is at depth "
            f"{best} ({verdict})."]


def _depth_list(rows: dict, key: str) -> str:
    """The depths whose ``key`` run trains, and those where only some replicas reach the threshold."""
    full = [d for d, r in rows.items() if trains(r[key])]
    some = [f"{d} ({int(np.sum(np.nan_to_num(r[key]['train'], nan=0.0) >= THRESHOLD))}/{r[key]['train'].size})"
            for d, r in rows.items() if not trains(r[key]) and np.any(np.nan_to_num(r[key]["train"], nan=0.0)
                                                                     >= THRESHOLD)]
    return (", ".join(map(str, full)) or "none") + (f"; partly (replicas >= {THRESHOLD:g}): {', '.join(some)}"
                                                     if some else "")


def _rising_lines(results: dict) -> list[str]:
    """The runs of the tables whose training accuracy had not plateaued (``still_rising``)."""
    found = []
    for family, rows in results.items():
        for depth, row in rows.items():
            for key in ("tuned", "fixed"):
                run = row.get(key)
                if run is None or (key == "fixed" and row["eta"] == FIXED_ETA) or not still_rising(run):
                    continue
                eta = row["eta"] if key == "tuned" else FIXED_ETA
                found.append(f"{family} depth {depth} at eta {eta:g} ({rising(run):+.3f})")
    if not found:
        return [f"- Every training accuracy has plateaued (it rises by <= {PLATEAU:g} over the second half, or has "
                "reached its top)."]
    return [f"- **Not plateaued** (training accuracy still rising by more than {PLATEAU:g} over the second half): "
            f"{'; '.join(found)}. Their accuracies in the tables above are those of the step budget; the tuned ones "
            f"are rerun {LONG_FACTOR} times longer below."]


def _long_lines(results: dict) -> list[str]:
    """The tuned runs that had not plateaued, rerun LONG_FACTOR times longer at the same eta."""
    rows = [(family, depth, row) for family, by_depth in results.items() for depth, row in by_depth.items()
            if "long" in row]
    if not rows:
        return []
    lines = ["", f"**Run to the plateau**: every tuned run still rising at the end, rerun {LONG_FACTOR} times longer "
             "at its chosen eta (plateau: training accuracy at the end minus at half the steps).", "",
             "| family | depth | eta | steps | train acc. | test acc. | trains | plateau |", "|---|---|---|---|---|---|---|---|"]
    for family, depth, row in rows:
        lines.append(f"| {family} | {depth} | {row['eta']:g} | {row['long_steps']:,} | {_run_cells(row['long'])} |")
    still = [f"{family} depth {depth}" for family, depth, row in rows if still_rising(row["long"])]
    lines += ["", "- Still rising after the longer run (a rise of more than "
              f"{PLATEAU:g} over its second half, below a training accuracy of {1 - PLATEAU:g}): "
              + (", ".join(still) if still else "none") + "."]
    return lines


def _optimum_lines(rows: dict, label: str) -> list[str]:
    best = best_depth(rows)
    if best is None:
        return [f"- {label}: no depth trains."]
    out = [f"- {label}: the depth of the highest test accuracy among the trained depths is **{best}** "
           f"({_cell(interval(rows[best]['tuned']['test']))})."]
    trained = sorted((d for d in rows if trains(rows[d]["tuned"]) and d != best),
                     key=lambda d: -np.nanmean(rows[d]["tuned"]["test"]))
    for other in dict.fromkeys(d for d in (trained[0] if trained else best, min(rows), max(trained or [best]))):
        if other != best:
            diff = difference(rows[best]["tuned"]["test"], rows[other]["tuned"]["test"])
            out.append(f"  Depth {best} minus depth {other}: {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}].")
    return out


def figure(results: dict, out_dir) -> list[str]:
    """Test and training accuracy against depth: the fixed-eta relu curve and, per family (plain relu, the
    tanh and clipping remedies), its tuned run carried to the plateau (the longer rerun where the
    4,000-step run was still rising). Means over replicas with 95 % bootstrap bands; a diverged replica
    counts as 0 in training accuracy and is left out of test accuracy."""
    from analysis.figures import pyplot, save

    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = [("relu", lambda row: row.get("fixed"), f"relu, eta = {FIXED_ETA:g} fixed", "C7", "s--")]
    curves += [(family, _best_run, f"{LABELS[family]}, eta tuned, to the plateau", color, "o-")
               for family, color in (("relu", "C0"), ("tanh", "C1"), ("clip", "C2"))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in zip(axes, ("test", "train"), ("test accuracy", "training accuracy")):
        for family, pick, label, color, style in curves:
            points = []
            for depth, row in (results.get(family) or {}).items():
                run = pick(row)
                if run is None:
                    continue
                values = run[key] if key == "test" else np.nan_to_num(run[key], nan=0.0)
                mean, low, high = interval(values)
                if np.isfinite(mean):
                    points.append((depth, mean, low if np.isfinite(low) else mean, high if np.isfinite(high) else mean))
            if points:
                d, m, lo, hi = (np.array(v) for v in zip(*points))
                ax.plot(d, m, style, color=color, ms=4, label=label)
                ax.fill_between(d, lo, hi, color=color, alpha=0.2)
        if key == "train":
            ax.axhline(THRESHOLD, color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("depth (hidden layers)")
        ax.set_title(title, fontsize=9)
    axes[1].legend(fontsize=7)
    fig.suptitle("width-32 MLPs on the digits: means over replicas, 95 % bootstrap bands", fontsize=9)
    return [save(fig, out_dir / "depth_trainability.png")]


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from analysis.blocks import results_arguments, write_blocks
    from dynsim.kinds import load_config

    args = results_arguments(__doc__, ROOT, argv, figures="docs/figures/deep")

    def log(message):
        print(message, file=sys.stderr, flush=True)

    bases = {name: load_config(ROOT / "data" / "configs" / file).to_mapping() for name, file in FAMILIES.items()}
    results = {"relu": tune(bases["relu"], "relu", DEPTHS, ETAS, args.runs, fixed_eta=FIXED_ETA, log=log)}
    failing = remedy_depths(results["relu"])
    if failing:
        results["tanh"] = tune(bases["tanh"], "tanh", failing, ETAS, args.runs, log=log)
    norms = {d: gradient_norms(bases["relu"], d) for d in NORM_DEPTHS}
    log("initial batch-gradient norms (median): "
        + ", ".join(f"depth {d} {np.median(v):.3f}" for d, v in norms.items()))
    if bases["clip"]["training"]["clip_norm"] != CLIP_NORM:
        raise SystemExit(f"{FAMILIES['clip']} has clip_norm {bases['clip']['training']['clip_norm']}, the script "
                         f"describes {CLIP_NORM}: make them agree")
    clip = tune(bases["clip"], "clip", CLIP_DEPTHS, CLIP_ETAS, args.runs, log=log)
    results["clip"] = dict(sorted(clip.items()))
    write_blocks(args.results, {"depth_trainability": markdown(results, norms=norms)})
    figure(results, args.figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
