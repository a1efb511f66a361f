from service.errors import Unprocessable
from service.ledger.errors import InsufficientPoints

__all__ = ["InsufficientPoints", "PointsOverLimit", "ZeroAdjustment"]


class PointsOverLimit(Unprocessable):
    code, title = "points_over_limit", "More points than this basket allows"


class ZeroAdjustment(Unprocessable):
    code, title = "validation_error", "An adjustment must change the balance"
