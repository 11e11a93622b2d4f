"""From a real MLflow store filled with known metrics: loading, the report's numbers, the exported files, the CLI."""

import ast
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from dashboards import load
from dashboards.analysis import analyse, headline_table
from dashboards.export import export_report
from mta_ablate.cli import main
from tests.dashboards.conftest import BASELINE_PPL, MTA_PPL, NO_MIX_PPL, log_sweep
from tests.dashboards.test_stats import t975_df2, two_sided_p_df2


def by_hand(values: dict, reference: dict) -> dict:
    """Mean, t CI, paired t p-value (2 df closed form) of one arm, from the numbers the fixture logged."""
    x = list(values.values())
    mean, sd = statistics.fmean(x), statistics.stdev(x)
    half = t975_df2() * sd / math.sqrt(len(x))
    out = {"mean": mean, "ci_lo": mean - half, "ci_hi": mean + half}
    d = [values[s] - reference[s] for s in values]
    if any(d):
        t = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(len(d)))
        out |= {"diff": statistics.fmean(d), "p_t": two_sided_p_df2(t)}
    return out


def test_load_keeps_every_trial_and_reads_the_parent_tags(store):
    uri, _ = store
    sweep = load.load_sweep("kernels", uri)
    assert (sweep.design, sweep.reference, sweep.objective, sweep.direction) == (
        "ablation",
        "baseline",
        "final/ppl",
        "minimize",
    )
    assert sweep.counts() == {"running": 0, "complete": 9, "pruned": 1, "failed": 1}
    assert sweep.trials.height == 11 and sweep.complete().height == 9
    assert sweep.arms() == ["baseline", "mta_full", "no_head_mix"]
    assert not sweep.running
    failed = sweep.trials.filter(pl.col("state") == "failed").row(0, named=True)
    assert (failed["arm"], failed["seed"], failed["status"]) == ("mta_full", 3, "FAILED")
    assert failed["failure"] == "RuntimeError: CUDA out of memory"
    assert sweep.trials.schema["param:model.dim"] == pl.String
    assert sweep.trials.filter(pl.col("arm") == "baseline").sort("seed")["final/ppl"].to_list() == [10.0, 11.0, 12.0]


def test_report_numbers_equal_hand_computed_values(store):
    uri, _ = store
    sweep = load.load_sweep("kernels", uri)
    report = analyse(sweep, load.load_histories(sweep, ["val/ppl"]))
    rows = {r["arm"]: r for r in report.comparison.filter(pl.col("metric") == "final/ppl").iter_rows(named=True)}
    mta, no_mix = by_hand(MTA_PPL, BASELINE_PPL), by_hand(NO_MIX_PPL, BASELINE_PPL)
    base = by_hand(BASELINE_PPL, BASELINE_PPL)
    for arm, expected in (("mta_full", mta), ("no_head_mix", no_mix)):
        for key in ("mean", "ci_lo", "ci_hi", "diff", "p_t"):
            assert rows[arm][key] == pytest.approx(expected[key], abs=1e-9), (arm, key)
        assert rows[arm]["n"] == 3 and rows[arm]["n_pairs"] == 3
    assert (rows["baseline"]["mean"], rows["baseline"]["ci_lo"]) == pytest.approx((11.0, base["ci_lo"]))
    # Holm over the two arms: the smaller p doubled, the larger one max(itself, that).
    assert rows["mta_full"]["p_t_holm"] == pytest.approx(2 * mta["p_t"])
    assert rows["no_head_mix"]["p_t_holm"] == pytest.approx(max(no_mix["p_t"], 2 * mta["p_t"]))
    assert rows["mta_full"]["p_wilcoxon_holm"] == pytest.approx(0.5)  # exact 2/8, doubled by Holm
    assert rows["mta_full"]["significant"] and rows["mta_full"]["better"]
    assert not rows["no_head_mix"]["significant"]
    assert rows["mta_full"]["factor"] == "attention" and rows["mta_full"]["level"] == "mta"
    # Per corpus: the fixture logs ppl + 1 for books, so the means shift by one and the tests are unchanged.
    books = report.comparison.filter((pl.col("metric") == "final/ppl/books") & (pl.col("arm") == "mta_full"))
    assert books["mean"][0] == pytest.approx(mta["mean"] + 1) and books["p_t"][0] == pytest.approx(mta["p_t"])
    assert report.corpora == ["books", "code"]
    assert headline_table(report)["verdict"].to_list() == ["reference", "better", "not significant"]


def test_report_words_warnings_cost_needles_and_curves(store):
    uri, ids = store
    sweep = load.load_sweep("kernels", uri)
    report = analyse(sweep, load.load_histories(sweep, ["val/ppl"]))
    assert report.findings[0].startswith("mta_full is significantly better than baseline")
    assert "not significant" in report.findings[1] and "seed noise" in report.findings[1]
    assert any("1 trial(s) failed" in w for w in report.warnings)
    assert any("1 trial(s) pruned" in w for w in report.warnings)
    assert report.not_complete["state"].to_list() == ["failed", "pruned"]
    cost = {r["arm"]: r for r in report.cost.iter_rows(named=True)}
    assert cost["mta_full"]["step_rel"] == pytest.approx(1.25) and cost["baseline"]["step_rel"] == 1.0
    assert cost["mta_full"]["model/params/mta"] == 100 and cost["baseline"]["model/params/total"] == 1000
    cell = report.needle_cells.filter(
        (pl.col("arm") == "mta_full") & (pl.col("ctx") == 64) & (pl.col("k") == 1) & (pl.col("depth_lo") == 50)
    )
    assert cell["accuracy"][0] == pytest.approx(0.375) and cell["n"][0] == 3
    assert sorted(set(report.needle_k["k"].to_list())) == [1, 2]
    wrong = report.needle_wrong.filter((pl.col("arm") == "mta_full") & (pl.col("ctx") == 128))
    assert wrong.sort("k")["accuracy"].to_list() == [0.0, 0.125]  # (1 - 0.75) / 2 with 2 needles, none with 1
    # val/ppl history: final + 4, + 2, + 0 at steps 10, 20, 30; only complete trials (the pruned one logged 30.0).
    base = report.curves.filter(pl.col("arm") == "no_head_mix").sort("step")
    assert base["mean"].to_list() == pytest.approx([statistics.fmean(NO_MIX_PPL.values()) + d for d in (4, 2, 0)])
    assert report.best_arm == "mta_full" and report.best_run_id == ids["runs"]["mta_full", 0]


def test_running_sweep_says_so_at_the_top(store, tmp_path):
    uri, _ = store
    result = export_report("live", tmp_path / "live", uri=uri, log_artifact=False)
    assert result.report.sweep.running
    md = (tmp_path / "live" / "report.md").read_text()
    first = md.split("## What was learned")[0]
    assert "still running" in first and "partial" in first
    assert "still running" in (tmp_path / "live" / "report.html").read_text().split("<h2>")[0]


def test_export_writes_every_file_and_logs_them_to_the_parent(store, tmp_path):
    uri, ids = store
    out = tmp_path / "report"
    result = export_report("kernels", out, uri=uri)
    for name in ("report.html", "report.md", "summary.csv", "trials.parquet", "figures/objective.png"):
        assert (out / name).stat().st_size > 0, name
    for figure in ("curves", "corpora", "needle_grid", "needle_k", "cost"):
        assert (out / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials.height == 11 and set(trials["state"]) == {"complete", "failed", "pruned"}
    summary = pl.read_csv(out / "summary.csv")
    row = summary.filter((pl.col("metric") == "final/ppl") & (pl.col("arm") == "mta_full")).row(0, named=True)
    assert row["p_t"] == pytest.approx(by_hand(MTA_PPL, BASELINE_PPL)["p_t"], abs=1e-6)
    md = (out / "report.md").read_text()
    assert "> **Warning:** 1 trial(s) failed" in md and "![final/ppl per arm](figures/objective.png)" in md
    assert "Holm" in md and "Student t" in md
    assert "Wrong-needle rate" in md and "| mta_full | 0 | 0.125 | 0 | 0.125 |" in md
    assert result.logged_to == ids["parent"]
    from mlflow.tracking import MlflowClient

    logged = {a.path for a in MlflowClient(uri).list_artifacts(ids["parent"], "report")}
    assert {"report/report.html", "report/report.md", "report/summary.csv", "report/trials.parquet"} <= logged


def test_cli_report_prints_the_headline_and_writes_the_files(store, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["report", "kernels", "--out", str(out), "--no-log"]) == 0
    text = capsys.readouterr().out
    assert "mta_full" in text and "better" in text and "not significant" in text and "report.html" in text
    assert (out / "report.html").exists() and (out / "trials.parquet").exists()
    assert main(["report", "kernels", "--out", str(out), "--no-log", "--json", "--ci", "bootstrap"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["headline"][1]["arm"] == "mta_full" and payload["headline"][1]["ci_method"] == "bootstrap"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "nope"], "sweep 'nope': no such experiment"),
        (["report", "kernels", "--baseline", "nope", "--no-log"], "--baseline='nope': not an arm"),
        (["report", "kernels", "--alpha", "2"], "--alpha=2.0"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(store, tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_dashboards_never_import_model_code_nor_torch():
    banned = ("torch", "lightning", "lightning_modules", "mta_ablate.model", "mta_ablate.attention", "mta_ablate.data")
    for path in Path(load.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(banned), f"{path.name} imports {name}"
    code = "import sys, dashboards.load, dashboards.export; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "building a report must not load torch"


def test_best_arm_learned_kernels_are_in_the_report(store, tmp_path):
    uri, _ = store
    result = export_report("kernels", tmp_path / "r", uri=uri, log_artifact=False)
    assert (tmp_path / "r" / "figures" / "mta_parameters.png").read_bytes()[:4] == b"\x89PNG"
    assert "Learned MTA parameters of the best arm (mta_full)" in (tmp_path / "r" / "report.md").read_text()
    assert "figures/differences.png" in result.paths


def test_search_design_has_history_importance_and_pareto(shared_store, tmp_path):
    from tests.dashboards.conftest import log_search_sweep

    home, uri, _ = shared_store
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    log_search_sweep(uri, home / "mlartifacts", storage, name="search")
    result = export_report("search", tmp_path / "s", uri=uri, log_artifact=False)
    for figure in ("history", "importance", "cost"):
        assert f"figures/{figure}.png" in result.paths, figure
    assert "One seed per arm: no confidence interval or significance test is possible." in result.report.warnings
    assert result.report.reference == "" and "pass --baseline ARM" in result.report.findings[0]
    from dashboards.export import search_importance

    importance, reason = search_importance(result.report.sweep)
    assert reason is None and max(importance, key=importance.get) == "train.lr"


def log_grid_sweep(uri: str, artifacts: Path, name: str) -> None:
    """A 2x2 grid (variant x target), 3 seeds: MTA beats the baseline by 1.0 on target a and by 3.0 on target b,
    while target b is 5.0 harder for both; its step time is 2x the baseline's on a and 3x on b."""
    from mlflow.tracking import MlflowClient

    from tests.dashboards.conftest import log_trial

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(name, artifact_location=(artifacts / name).resolve().as_uri())
    tags = {"mta.kind": "sweep", "mta.sweep": name, "mta.design": "grid", "mta.reference": ""}
    tags |= {"mta.objective": "final/ppl", "mta.direction": "minimize", "mta.storage": "sqlite:///nowhere.db"}
    parent = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    trial = 0
    for target, hard, gain, cost in (("a", 0.0, 1.0, 2.0), ("b", 5.0, 3.0, 3.0)):
        for variant in ("base", "mta"):
            for seed, noise in enumerate((0.0, 0.5, 1.5)):
                ppl = 10.0 + hard + noise - (gain + 0.1 * seed if variant == "mta" else 0.0)
                step = 100.0 * (cost if variant == "mta" else 1.0)
                metrics = {"final/ppl": ppl, "perf/step_ms": step}
                arm = f"variant={variant},target={target}"
                log_trial(client, exp_id, parent, name, arm, seed, trial, "", "", metrics)
                trial += 1
    client.set_terminated(parent, "FINISHED")


def test_grid_compared_within_each_level_of_the_other_factors(store, shared_store, tmp_path, capsys):
    home, uri, _ = shared_store  # `store`: the CLI's default store is this one
    log_grid_sweep(uri, home / "mlartifacts", "grid2x2")
    sweep = load.load_sweep("grid2x2", uri=uri)
    report = analyse(sweep, baseline="variant=base")
    rows = {r["arm"]: r for r in headline_table(report).iter_rows(named=True)}
    for target, gain, cost in (("a", 1.0, 2.0), ("b", 3.0, 3.0)):
        mta, base = rows[f"variant=mta,target={target}"], rows[f"variant=base,target={target}"]
        assert mta["ref"] == f"variant=base,target={target}" and base["verdict"] == "reference"
        assert mta["diff"] == pytest.approx(-(gain + 0.1))  # mean of -(gain + 0.1 * seed) over seeds 0-2
        assert mta["verdict"] == "better" and mta["step_rel"] == pytest.approx(cost)
    assert len(report.findings) == 2 and all(" than variant=base,target=" in f for f in report.findings)
    whole_arm = analyse(sweep, baseline="variant=base,target=a")  # one reference for all: b looks worse than a
    assert {r["ref"] for r in headline_table(whole_arm).iter_rows(named=True)} == {"variant=base,target=a"}
    assert main(["report", "grid2x2", "--baseline", "variant=none", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "variant=none is not a level" in err and "variant: base, mta; target: a, b" in err


def test_a_sweep_run_in_batches_reports_as_one(store, shared_store, tmp_path, capsys):
    """Seeds 0-1 in one sweep and seed 2 in another, pooled with --with: the numbers of the sweep that ran all three."""
    home, uri, _ = shared_store
    log_sweep(uri, home / "mlartifacts", "batch_a", extra_states=False, seeds=(0, 1))
    log_sweep(uri, home / "mlartifacts", "batch_b", extra_states=False, seeds=(2,))
    assert (
        main(["report", "batch_a", "--with", "batch_b", "--out", str(tmp_path / "pooled"), "--no-log", "--json"]) == 0
    )
    pooled = json.loads(capsys.readouterr().out)["headline"]
    assert main(["report", "kernels", "--out", str(tmp_path / "whole"), "--no-log", "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)["headline"]
    assert [(r["arm"], r["n"], r["verdict"]) for r in pooled] == [(r["arm"], r["n"], r["verdict"]) for r in whole]
    assert [r["n"] for r in pooled] == [3, 3, 3]
    for key in ("mean", "ci_lo", "ci_hi", "diff", "p_t_holm"):
        assert [r[key] for r in pooled] == pytest.approx([r[key] for r in whole], nan_ok=True), key
    assert "Trials pooled from sweeps batch_a, batch_b" in (tmp_path / "pooled" / "report.md").read_text()
    assert sorted(set(pl.read_parquet(tmp_path / "pooled" / "trials.parquet")["sweep"])) == ["batch_a", "batch_b"]


def test_pooling_refuses_overlapping_seeds_and_different_configs(store, shared_store, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    home, uri, _ = shared_store
    log_sweep(uri, home / "mlartifacts", "batch_c", extra_states=False, seeds=(0,))
    longer = log_sweep(uri, home / "mlartifacts", "batch_d", extra_states=False, seeds=(2,))
    MlflowClient(uri).log_param(longer["runs"]["baseline", 2], "train.max_steps", "500")
    for others, message in (
        (["batch_c"], "arm 'baseline' seed 0 completed in both 'kernels' and 'batch_c'"),
        (["batch_d"], "arm 'baseline' ran with train.max_steps=None in 'batch_c' but train.max_steps=500 in 'batch_d'"),
        (["kernels"], "a sweep is named twice"),
    ):
        first = "batch_c" if others == ["batch_d"] else "kernels"
        argv = ["report", first, *(a for o in others for a in ("--with", o)), "--out", str(tmp_path / "x")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x").exists()
