from service.errors import Conflict


class InsufficientPoints(Conflict):
    code, title = "insufficient_points", "Not enough points"


class InsufficientFunds(Conflict):
    code, title = "insufficient_funds", "Not enough stored value"


class InvalidPosting(Exception):
    """A posting that does not balance, or moves an account it may not: a bug, never the client's fault (a 500,
    and nothing is written)."""
