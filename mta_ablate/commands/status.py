"""`mta-ablate status`: filled by the sweep issue."""


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="(not yet available)")
    p.set_defaults(run=lambda args: 1)
