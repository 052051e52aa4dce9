"""Registry tables. The migrations in gateway/db/migrations create exactly these (a test checks)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, ForeignKey, String, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gateway.db.base import Base


class InstitutionKind(enum.StrEnum):
    HOSPITAL = "hospital"
    PHARMACY = "pharmacy"
    KIOSK = "kiosk"


class InstitutionLevel(enum.StrEnum):
    COMMUNITY = "community"
    SECONDARY = "secondary"
    TERTIARY = "tertiary"


class Institution(Base):
    __tablename__ = "institutions"
    __table_args__ = (
        CheckConstraint("kind IN ('hospital', 'pharmacy', 'kiosk')", name="kind"),
        CheckConstraint("level IS NULL OR level IN ('community', 'secondary', 'tertiary')", name="level"),
    )

    # The national designated-institution code, 12 characters (e.g. H33020300001).
    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    region_code: Mapped[str] = mapped_column(String(6))
    kind: Mapped[str] = mapped_column(String(16))
    # Hospitals have a level; pharmacies and kiosks may not.
    level: Mapped[str | None] = mapped_column(String(16), nullable=True)
    cross_region_designated: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    terminals: Mapped[list[Terminal]] = relationship(back_populates="institution")


class Terminal(Base):
    __tablename__ = "terminals"

    terminal_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    institution_code: Mapped[str] = mapped_column(ForeignKey("institutions.code"), index=True)
    # Salted HMAC-SHA256 of the terminal's credential (gateway.registry.credentials); never the secret.
    credential_hash: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The card reader serving this terminal (gateway.reader.spec): "terminal" is its own reader, by
    # APDU relay; "pcsc:NAME" a reader on the gateway host; "virtual[:CARD]" an in-process virtual card.
    reader: Mapped[str] = mapped_column(String(80), server_default="terminal", default="terminal")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    institution: Mapped[Institution] = relationship(back_populates="terminals")
