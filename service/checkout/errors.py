from service.errors import Conflict, NotFound, Unprocessable, on_violation


class CurrencyMismatch(Unprocessable):
    code, title = "currency_mismatch", "The basket is in another currency than the program"


class OccurredAtOutOfRange(Unprocessable):
    code, title = "occurred_at_out_of_range", "occurred_at is out of the allowed range"


class DuplicateReceipt(Conflict):
    code, title = "duplicate_receipt", "This receipt was already committed at this store"


# On PostgreSQL the receipt goes in last, with the commit's other writes (see repository.add_transaction).
on_violation("uq_checkout_transactions_store_receipt", DuplicateReceipt,
             "This receipt number was already committed at this store: GET /v1/stores/{store_id}/receipts/"
             "{receipt_id} shows that sale; or give this sale a new receipt number.")


class DuplicateReturn(Conflict):
    code, title = "duplicate_return", "This return slip was already taken for this sale"


# A backstop: the sale's row is locked before its returns are read, so the service finds a duplicate first.
on_violation("uq_checkout_returns_transaction_receipt", DuplicateReturn,
             "This return slip number was already taken for this sale; give this return a new number.")


class TransactionNotFound(NotFound):
    code, title = "transaction_not_found", "Transaction not found"


class TransactionNotVoidable(Conflict):
    code, title = "transaction_not_voidable", "The transaction cannot be voided"


class TransactionNotReturnable(Conflict):
    code, title = "transaction_not_returnable", "Nothing of the transaction can be returned"


class ReturnExceedsPurchase(Unprocessable):
    code, title = "return_exceeds_purchase", "More returned than was bought"


class UnknownLine(Unprocessable):
    code, title = "unknown_line", "The transaction has no such line"
