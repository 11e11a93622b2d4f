"""`mta-ablate data ...`: filled by the data issue."""


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="corpora and tasks (not yet available)")
    p.set_defaults(run=lambda args: 1)
