"""Time to threshold: first validation step at the level, per seed and per arm, in the report and its files."""

import json

import polars as pl

from dashboards.convergence import threshold_for, time_to_threshold
from mta_ablate.cli import main


def _histories(values: dict[tuple[str, int], list[float]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = [
        (f"{arm}-{seed}", arm, seed, "val/error", 100 * (i + 1), v)
        for (arm, seed), vs in values.items()
        for i, v in enumerate(vs)
    ]
    frame = pl.DataFrame(rows, schema=["run_id", "arm", "seed", "key", "step", "value"], orient="row")
    return frame, pl.DataFrame({"run_id": [f"{a}-{s}" for a, s in values]})


def test_first_step_at_the_threshold_and_never_ranked_last():
    histories, done = _histories(
        {
            ("mta", 0): [0.5, 0.04, 0.06, 0.01],  # first at step 200, even though it goes back up
            ("mta", 1): [0.5, 0.2, 0.05, 0.01],  # exactly at the threshold counts: step 300
            ("mta", 2): [0.5, 0.5, 0.5, 0.5],  # never
            ("base", 0): [0.9, 0.9, 0.9, 0.9],
            ("base", 1): [0.9, 0.9, 0.9, 0.04],
            ("base", 2): [0.9, 0.9, 0.9, 0.9],
        }
    )
    per_run, per_arm = time_to_threshold(histories, "val/error", done, 0.05, "minimize")
    steps = {(r["arm"], r["seed"]): r["step"] for r in per_run.iter_rows(named=True)}
    assert steps == {("mta", 0): 200, ("mta", 1): 300, ("mta", 2): None, ("base", 0): None, ("base", 1): 400,
                     ("base", 2): None}  # fmt: skip
    arms = {r["arm"]: r for r in per_arm.iter_rows(named=True)}
    assert (arms["mta"]["reached"], arms["mta"]["n"], arms["mta"]["median_step"]) == (2, 3, 300)
    assert (arms["mta"]["min_step"], arms["mta"]["max_step"]) == (200, 300)
    assert arms["base"]["reached"] == 1 and arms["base"]["median_step"] is None  # most seeds never got there


def test_a_maximised_metric_reaches_from_below_and_only_some_objectives_have_a_default():
    histories, done = _histories({("a", 0): [0.1, 0.6, 0.95], ("a", 1): [0.1, 0.2, 0.3]})
    per_run, per_arm = time_to_threshold(histories, "val/error", done, 0.9, "maximize")
    assert per_run["step"].to_list() == [300, None]
    assert per_arm.row(0, named=True)["median_step"] == 300  # lower median of two: the faster seed
    assert threshold_for("toy/error", None) == 0.05 and threshold_for("final/ppl", None) is None
    assert threshold_for("final/ppl", 12.0) == 12.0


def test_report_with_a_threshold_has_the_section_the_csv_and_the_json(store, tmp_path, capsys):
    out = tmp_path / "t"
    argv = ["report", "kernels", "--out", str(out), "--no-log", "--threshold", "11.5"]
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    arms = {r["arm"]: r for r in payload["time_to_threshold"]}
    assert (arms["mta_full"]["reached"], arms["mta_full"]["median_step"]) == (3, 20)
    assert (arms["baseline"]["reached"], arms["baseline"]["median_step"]) == (2, 30)
    per_seed = pl.read_csv(out / "time_to_threshold.csv")
    assert per_seed.filter((pl.col("arm") == "baseline") & (pl.col("seed") == 2))["step"].to_list() == [None]
    text = (out / "report.md").read_text()
    assert "Time to threshold (val/ppl ≤ 11.5)" in text and "0: 20, 1: 20, 2: 30" in text
    assert main(["report", "kernels", "--out", str(tmp_path / "u"), "--no-log"]) == 0  # final/ppl: no default
    assert "Time to threshold" not in (tmp_path / "u" / "report.md").read_text()
