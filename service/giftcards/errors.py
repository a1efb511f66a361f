from service.errors import Conflict, NotFound, ServiceError, Unprocessable


class GiftCardNotFound(NotFound):
    code, title = "gift_card_not_found", "Gift card not found"


class WrongGiftCardPin(Unprocessable):
    code, title = "gift_card_pin_invalid", "Wrong gift card PIN"


class GiftCardLocked(Conflict):
    code, title = "gift_card_locked", "The gift card is locked after too many wrong PINs"


class GiftCardExceedsPayable(Unprocessable):
    code, title = "gift_card_exceeds_payable", "The gift cards pay more than is owed"


class GiftCardsNotConfigured(ServiceError):
    status, code, title = 503, "gift_cards_not_configured", "Gift cards are not configured"
