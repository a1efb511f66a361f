from service.errors import Conflict


class InsufficientPoints(Conflict):
    code, title = "insufficient_points", "Not enough points"


class InsufficientFunds(Conflict):
    code, title = "insufficient_funds", "Not enough stored value"


class UnbalancedTransaction(Exception):
    """A posting whose entries do not sum to zero per asset: a bug, never the client's fault (a 500)."""
