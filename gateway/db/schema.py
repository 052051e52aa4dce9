"""Every table of the gateway, registered on one metadata (migrations and schema tests import this)."""

from __future__ import annotations

import gateway.ledger.models
import gateway.registry.models
from gateway.db.base import Base

metadata = Base.metadata

__all__ = ["gateway", "metadata"]
