"""Export a sweep's report: the only code in `dashboards/` that writes files (and the report artifact).

    result = export_report("kernel_sizes", Path("reports/kernel_sizes"))
    result.paths        # report.html, report.md, summary.csv, trials.parquet, figures/*.png

Files written under `out`:
    report.html     one self-contained page (figures as data: URIs, sortable tables, no network requests)
    report.md       the same content in Markdown, figures linked from figures/
    summary.csv     one row per (metric, arm): mean, sd, n, CI, paired difference, p-values (raw and Holm), d_z
    trials.parquet  one row per trial, every state, with tags, last metric values and params (load.trials_frame)
    figures/*.png   every figure of the report
The folder is then logged to the sweep's parent run under the artifact path `report/`.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dashboards.analysis import Report, analyse
from dashboards.content import blocks
from dashboards.load import Sweep, download_artifact, load_histories, load_sweep
from dashboards.render import build_figures, to_html, to_markdown
from mta_ablate.errors import ConfigError
from mta_ablate.metrics import validation_key

log = logging.getLogger(__name__)

REPORT_ARTIFACT_PATH = "report"


@dataclass(frozen=True)
class ExportResult:
    report: Report
    out: Path
    paths: dict[str, Path]
    """name -> file written (report.html, report.md, summary.csv, trials.parquet, and one per figure)."""
    logged_to: str | None
    """The parent run id the report was logged to (None when there is no parent or logging was off)."""


def mta_parameters_png(report: Report) -> bytes | None:
    """The learned-kernel figure (`mta_parameters.png`) that the best arm's best run logged, if any."""
    if report.best_run_id is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifact(report.sweep, report.best_run_id, "mta_parameters.png", tmp)
        return Path(path).read_bytes() if path else None


def search_importance(sweep: Sweep, storage: str | None = None) -> tuple[dict[str, float], str | None]:
    """PED-ANOVA parameter importance from the sweep's Optuna study; ({}, reason) when it cannot be computed.

    storage: the Optuna storage URL; default the one recorded on the parent run (tag mta.storage, which has any
    password removed: pass the full URL for a password-protected database)."""
    storage = storage or sweep.storage
    if not storage:
        return {}, "no Optuna storage recorded on the parent run (tag mta.storage)"
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        name = sweep.name if sweep.name in names else (names[0] if len(names) == 1 else None)
        if name is None:
            return {}, f"no study named {sweep.name!r} in {storage}"
        study = optuna.load_study(study_name=name, storage=storage)
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), None
    except Exception as exc:  # storage unreachable, too few trials, one-valued params: report it, go on
        return {}, f"parameter importance unavailable: {type(exc).__name__}: {exc}"


def _csv_safe(cell: str | None) -> str | None:
    return "'" + cell if cell and cell[0] in "=+-@\t\r" else cell


def _write_files(report, images: dict[str, bytes], out: Path) -> dict[str, Path]:
    """The report's files in `out`: figures/*.png, report.md, report.html, summary.csv, time_to_threshold.csv (when
    the objective has a threshold) and trials.parquet. Returns {relative name: path}."""
    content = blocks(report, list(images))
    (out / "figures").mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, png in images.items():
        paths[f"figures/{name}.png"] = out / "figures" / f"{name}.png"
        paths[f"figures/{name}.png"].write_bytes(png)
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(to_markdown(content), encoding="utf-8")
    paths["report.html"] = out / "report.html"
    title = f"Ablation report: {report.sweep.name}"
    paths["report.html"].write_text(to_html(content, images, title), encoding="utf-8")
    paths["summary.csv"] = out / "summary.csv"
    guarded = report.comparison.with_columns(  # a cell starting = + - @ is a formula to a spreadsheet: quote it
        pl.col(pl.String).map_elements(_csv_safe, return_dtype=pl.String)
    )
    guarded.write_csv(paths["summary.csv"], float_precision=6)
    if report.time_to_threshold:
        paths["time_to_threshold.csv"] = out / "time_to_threshold.csv"
        report.time_to_threshold["per_run"].write_csv(paths["time_to_threshold.csv"])
    paths["trials.parquet"] = out / "trials.parquet"
    report.sweep.trials.write_parquet(paths["trials.parquet"])
    return paths


def export_report(
    sweep: str | Sweep,
    out: Path,
    uri: str | None = None,
    baseline: str | None = None,
    ci: str = "t",
    seed: int = 0,
    alpha: float = 0.05,
    log_artifact: bool = True,
    storage: str | None = None,
    threshold: float | None = None,
) -> ExportResult:
    """Load (if given a name), analyse, draw and write the report of one sweep into `out` (created)."""
    if isinstance(sweep, str):
        sweep = load_sweep(sweep, uri)
    if sweep.complete().is_empty():
        raise ConfigError(
            f"sweep {sweep.name!r} has no complete trial yet: nothing to report, nothing written "
            f"(see `mta-ablate status {sweep.name}`)"
        )
    histories = load_histories(sweep, [validation_key(sweep.objective)]) if sweep.trials.height else None
    report = analyse(sweep, histories, baseline=baseline, ci=ci, seed=seed, alpha=alpha, threshold=threshold)
    extras: dict = {"mta_parameters": mta_parameters_png(report)}
    if sweep.design == "search":
        extras["importance"], reason = search_importance(sweep, storage)
        if reason:
            report.warnings.append(reason)
    out = Path(out)
    paths = _write_files(report, build_figures(report, extras), out)
    logged_to = None
    if log_artifact and sweep.parent_run_id:
        from dashboards.load import open_client

        mlflow_client, _ = open_client(uri or sweep.tracking_uri)
        try:
            mlflow_client.log_artifacts(sweep.parent_run_id, str(out), artifact_path=REPORT_ARTIFACT_PATH)
            logged_to = sweep.parent_run_id
        except Exception as exc:  # the files are written; a read-only artifact store must not fail the export
            log.warning("could not log the report to parent run %s: %s", sweep.parent_run_id, exc)
    log.info("report of %s written to %s", sweep.name, out)
    return ExportResult(report, out, paths, logged_to)
