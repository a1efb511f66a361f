"""Free text in the API: the one rule for which characters an id, a name or a code may hold.

No control characters (U+0000 to U+001F, U+007F to U+009F), no line or paragraph separators (U+2028, U+2029)
and no direction embeddings, overrides or isolates (U+202A to U+202E, U+2066 to U+2069): a name or a receipt
line is printed on a receipt and read out by a cashier, so a line break or a tab in it is a mistake, a direction
override prints it backwards, and PostgreSQL cannot store U+0000 in text at all. (Until 2026-12-08 only the
first range was refused.) The left-to-right and right-to-left marks (U+200E, U+200F) stay: names written right
to left carry them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

_NOT_PRINTED = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
PRINTABLE = rf"^[^{_NOT_PRINTED}]+$"
"""A regular expression for one or more characters, none of them a control character."""
PRINTABLE_OR_EMPTY = rf"^[^{_NOT_PRINTED}]*$"
"""The same, where an empty value is allowed (query parameters such as ``?after=``)."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=PRINTABLE)]
Text64 = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PRINTABLE)]
