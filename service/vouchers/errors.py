from service.errors import Conflict, NotFound, Unprocessable, on_violation


class CampaignNotFound(NotFound):
    code, title = "campaign_not_found", "Voucher campaign not found"


class VoucherNotFound(NotFound):
    """``GET /v1/vouchers/{code}`` for a code that does not exist."""

    code, title = "voucher_not_found", "Voucher not found"


class UnknownVoucher(Unprocessable):
    """A checkout names a code that does not exist (the request is wrong, not the state)."""

    code, title = "voucher_not_found", "Voucher not found"


class VoucherExpired(Conflict):
    code, title = "voucher_expired", "The voucher is no longer valid"


class VoucherAlreadyUsed(Conflict):
    code, title = "voucher_already_used", "The voucher was already used"


class VoucherNotApplicable(Unprocessable):
    code, title = "voucher_not_applicable", "The voucher does not apply to this sale"


class CampaignNotIssuing(Conflict):
    code, title = "campaign_not_issuing", "The campaign does not issue vouchers now"


class VoucherLimitReached(Conflict):
    code, title = "voucher_limit_reached", "The campaign's voucher limit is reached"


# A backstop: a campaign's update locks its row before comparing total_limit with what was issued.
on_violation("ck_voucher_campaigns_issued_count", VoucherLimitReached,
             "The campaign has already issued more vouchers than this total_limit allows; total_limit cannot be lower.")


class MemberNotInAudience(Unprocessable):
    code, title = "member_not_in_audience", "The member is not in the campaign's audience"
