"""Analysis and report export: reads only the tracking store (and Optuna storage), never loads a model.

    from dashboards.load import load_sweep, load_histories      # MLflow -> polars (one row per trial)
    from dashboards.analysis import analyse                      # -> Report: frames and sentences (pure)
    from mta_ablate.metrics import validation_key                # what tracks the objective during training
    from dashboards.export import export_report                 # the only writer: HTML, MD, CSV, Parquet, PNG

    sweep = load_sweep("kernel_sizes")
    report = analyse(sweep, load_histories(sweep, [validation_key(sweep.objective)]))
    export_report(sweep, Path("reports/kernel_sizes"))

Modules: `load` (MLflow store -> polars), `stats` (pure statistics over seeds: t/bootstrap CI, paired t, Wilcoxon,
Holm, Pareto), `analysis` (a sweep -> `Report`), `tables` (cost, needle, curves, equal compute), `content` (a
`Report` -> the blocks it says, in order), `figures` (matplotlib, `ax=None`, never saves), `render` (Markdown and
self-contained HTML strings), `export` (writes the files and logs them to the sweep's parent run).
"""
