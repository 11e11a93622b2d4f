"""`mta-ablate ui`: filled by the analysis issue (dashboards/)."""


def add_parser(sub) -> None:
    p = sub.add_parser("ui", help="(not yet available)")
    p.set_defaults(run=lambda args: 1)
