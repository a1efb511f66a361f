from service.errors import Unprocessable


class InvalidPeriod(Unprocessable):
    code, title = "invalid_period", "The period ends before it starts"
