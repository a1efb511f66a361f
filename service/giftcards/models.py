"""Gift cards: bearer instruments, each a code and a PIN. The balance is not here: it is the card's ``gift_card``
account in the ledger (``ledger_accounts.gift_card_id``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint
from sqlmodel import Field, SQLModel

from service.db import UTCDateTime


class GiftCard(SQLModel, table=True):
    __tablename__ = "gift_cards"
    __table_args__ = (CheckConstraint("initial_amount > 0", name="ck_gift_cards_initial_amount_positive"),)

    id: str = Field(primary_key=True, max_length=32)
    code: str = Field(max_length=32, unique=True)
    pin_hash: str = Field(max_length=128)
    currency: str = Field(max_length=3)
    initial_amount: int = Field(sa_type=BigInteger)
    issued_at: datetime = Field(sa_type=UTCDateTime)
    issued_by: str | None = Field(default=None, max_length=32)
