from service.errors import Conflict, NotFound, Unprocessable


class MemberNotFound(NotFound):
    code, title = "member_not_found", "Member not found"


class MemberExists(Conflict):
    code, title = "member_exists", "A member with these details already exists"


class MemberErased(Conflict):
    code, title = "member_erased", "The member's personal data was erased"


class InvalidCardNumber(Unprocessable):
    code, title = "invalid_card_number", "Invalid card number"


class InvalidReferralCode(Unprocessable):
    code, title = "invalid_referral_code", "Unknown referral code"


class LookupNeedsOneKey(Unprocessable):
    code, title = "validation_error", "Look members up by exactly one of card_number, phone or email"


class SelfReferral(Unprocessable):
    code, title = "self_referral", "A member cannot refer themselves"
