"""The audit log of admin changes (DESIGN §7). Domains write to it with :func:`record`."""

from service.audit.models import AuditEntry
from service.audit.service import record

__all__ = ["AuditEntry", "record"]
