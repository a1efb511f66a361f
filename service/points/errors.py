from service.errors import Unprocessable
from service.ledger.errors import InsufficientPoints

__all__ = ["InsufficientPoints", "PointsOverLimit", "SaleEarnsTooMuch", "ZeroAdjustment"]


class PointsOverLimit(Unprocessable):
    code, title = "points_over_limit", "More points than this basket allows"


class ZeroAdjustment(Unprocessable):
    code, title = "validation_error", "An adjustment must change the balance"


class SaleEarnsTooMuch(Unprocessable):
    code, title = "sale_earns_too_many_points", "More points than a sale may earn"
