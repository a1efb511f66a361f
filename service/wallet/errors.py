from service.errors import Unprocessable


class WalletExceedsPayable(Unprocessable):
    code, title = "wallet_exceeds_payable", "The wallet pays more than is owed"
