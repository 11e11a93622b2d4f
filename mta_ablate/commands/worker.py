"""`mta-ablate worker`: filled by the sweep issue."""


def add_parser(sub) -> None:
    p = sub.add_parser("worker", help="(not yet available)")
    p.set_defaults(run=lambda args: 1)
