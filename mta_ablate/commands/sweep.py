"""`mta-ablate sweep`: filled by the sweep issue."""


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="(not yet available)")
    p.set_defaults(run=lambda args: 1)
