"""The config keys that differ between the trials of one arm by design: a sweep sets them per trial (its seed, its
names, resume, no progress bar, a worker's share of the cores when the config leaves threads open), and everything
else comes from the arm. The sweep worker sets only these; pooling sweeps (`dashboards.load.pool`) compares every
other key."""

PER_TRIAL_KEYS = (
    "seed",
    "tracking.experiment",
    "tracking.run_name",
    "tracking.tags",
    "train.progress",
    "train.resume",
    "train.threads",
)
