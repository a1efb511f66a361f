"""Free text in the API: the one rule for which characters an id, a name or a code may hold.

No control characters (U+0000 to U+001F and U+007F): a name or a receipt line is printed on a receipt and read
out by a cashier, so a newline or a tab in it is a mistake, and PostgreSQL cannot store U+0000 in text at all.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
"""A regular expression for one or more characters, none of them a control character."""
PRINTABLE_OR_EMPTY = r"^[^\x00-\x1f\x7f]*$"
"""The same, where an empty value is allowed (query parameters such as ``?after=``)."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=PRINTABLE)]
Text64 = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=PRINTABLE)]
