"""Registry tables. The migrations in gateway/db/migrations create exactly these (a test checks).

Institutions and terminals say who may settle; persons, cards, filings, lookup problems and opening
balances say whose card settles and under which rules. Value lists in CHECK constraints are the
values of the enums in gateway.settlement.facts (tests/test_registry_persons.py checks they agree).
"""

from __future__ import annotations

import secrets
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gateway.db.base import Base
from gateway.protocol.session import MAX_TERMINAL_ID_CHARS
from gateway.reader.spec import MAX_SPEC_CHARS

# The longest texts the registry holds: its columns are this wide, and an import refuses a longer value
# with the column named (gateway.registry.importer, gateway.registry.person_tables).
MAX_INSTITUTION_NAME_CHARS = 100
MAX_PERSON_NAME_CHARS = 50
MAX_NOTE_CHARS = 200

# A person's id, by which the ledger keys the person's accounts and transactions (gateway.ledger.accounts): drawn
# at random when the registry first meets the person and never changed by an import, so it tells nothing of the ID
# number, which stays in the registry. 61 random bits above 2**61: always 19 digits (never taken for an
# 18-character ID number), within a signed 64-bit integer on SQLite and PostgreSQL.
PERSON_ID_RANDOM_BITS = 61
PERSON_ID_FLOOR = 1 << PERSON_ID_RANDOM_BITS


def new_person_id() -> int:
    return PERSON_ID_FLOOR + secrets.randbits(PERSON_ID_RANDOM_BITS)


class Institution(Base):
    __tablename__ = "institutions"
    __table_args__ = (
        CheckConstraint("kind IN ('hospital', 'pharmacy', 'kiosk')", name="kind"),
        CheckConstraint("level IS NULL OR level IN ('community', 'secondary', 'tertiary')", name="level"),
    )

    # The national designated-institution code, 12 characters (e.g. H33020300001).
    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_INSTITUTION_NAME_CHARS))
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

    terminal_id: Mapped[str] = mapped_column(String(MAX_TERMINAL_ID_CHARS), primary_key=True)
    institution_code: Mapped[str] = mapped_column(ForeignKey("institutions.code"), index=True)
    # Salted HMAC-SHA256 of the terminal's credential (gateway.registry.credentials); never the secret.
    credential_hash: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The card reader serving this terminal (gateway.reader.spec): "terminal" is its own reader, by
    # APDU relay; "pcsc:NAME" a reader on the gateway host; "virtual[:CARD]" an in-process virtual card.
    reader: Mapped[str] = mapped_column(String(MAX_SPEC_CHARS), server_default="terminal", default="terminal")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    institution: Mapped[Institution] = relationship(back_populates="terminals")


class Person(Base):
    """An insured person, keyed by the social security number (= resident ID number); known to the ledger only by
    `person_id`."""

    __tablename__ = "persons"
    __table_args__ = (
        CheckConstraint(
            "insurance_type IN ('employee_active', 'employee_retired', 'resident')", name="insurance_type"
        ),
    )

    social_security_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    # Given on insert only: an import updates a registered person's other columns and never this one.
    person_id: Mapped[int] = mapped_column(BigInteger, unique=True, default=new_person_id)
    name: Mapped[str] = mapped_column(String(MAX_PERSON_NAME_CHARS))
    insurance_type: Mapped[str] = mapped_column(String(20))
    # The current pooling region. The rules follow it, not the district printed in the card: a person
    # who moves between districts keeps the card (DESIGN.md 3.1 item 7).
    insured_region_code: Mapped[str] = mapped_column(String(6))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Card(Base):
    """A card issued to a person: a social security card, or an old medical-insurance IC card."""

    __tablename__ = "cards"
    __table_args__ = (
        CheckConstraint("kind IN ('social_security', 'old_medical_ic')", name="kind"),
        CheckConstraint("status IN ('active', 'lost_reported', 'replaced', 'cancelled')", name="status"),
        CheckConstraint("issue_date <= expiry_date", name="dates"),
        # Only a replaced card names its successor, and never itself.
        CheckConstraint(
            "replaced_by IS NULL OR (status = 'replaced' AND replaced_by <> card_number)", name="replaced_by"
        ),
    )

    card_number: Mapped[str] = mapped_column(String(9), primary_key=True)
    social_security_number: Mapped[str] = mapped_column(ForeignKey("persons.social_security_number"), index=True)
    # EF05 tag 01: issuing region + D156000005 + 16 hex digits. Unknown for some legacy cards.
    card_identification_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    issue_date: Mapped[date] = mapped_column(Date)
    expiry_date: Mapped[date] = mapped_column(Date)
    # The card that replaced this one (status 'replaced'); a replaced card is refused forever.
    replaced_by: Mapped[str | None] = mapped_column(ForeignKey("cards.card_number"), nullable=True)
    # The day of the first successful settlement with this card, set by the ledger: once a person's
    # social security card has been used, their old medical IC card stops working (DESIGN.md 3.1 item 6).
    first_used_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Filing(Base):
    """A filing for care elsewhere: transfer for treatment, or residence, in another region."""

    __tablename__ = "filings"
    __table_args__ = (
        CheckConstraint("kind IN ('transfer', 'residence')", name="kind"),
        CheckConstraint("valid_to IS NULL OR valid_from <= valid_to", name="dates"),
        # Filings have no natural key of their own; this one lets imports upsert instead of duplicating.
        # Its index also serves the look-up of a person's filings.
        UniqueConstraint("social_security_number", "kind", "region_code", "valid_from"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No index of its own: the unique constraint's index starts with this column.
    social_security_number: Mapped[str] = mapped_column(ForeignKey("persons.social_security_number"))
    kind: Mapped[str] = mapped_column(String(16))
    # Where care is filed for: a city (330200) or a district code.
    region_code: Mapped[str] = mapped_column(String(6))
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date, nullable=True)  # None: open-ended
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LookupProblemEntry(Base):
    """An ID number the insurance center cannot look up, and why (DESIGN.md 3.1 item 9).

    The number need not be a person in `persons`: the center's system knows it, ours may not.
    'id_mistyped' is never stored: a number failing its check digit is mistyped by definition.
    """

    __tablename__ = "lookup_problems"
    __table_args__ = (
        CheckConstraint(
            "problem IN ('not_covered', 'id_mismatch', 'bank_account_changed', 'id_changed', "
            "'government_staff', 'hmt_or_foreign', 'multiple_accounts', 'duplicate_id')",
            name="problem",
        ),
    )

    id_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    problem: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(MAX_NOTE_CHARS), nullable=True)


class OpeningBalance(Base):
    """A person's personal-account balances at the start of the ledger, in fen.

    The ledger posts them as opening transactions; afterwards the ledger, not this table, holds the balance.
    """

    __tablename__ = "opening_balances"
    __table_args__ = (
        CheckConstraint("current_year_fen >= 0", name="current_year_fen"),
        CheckConstraint("prior_years_fen >= 0", name="prior_years_fen"),
    )

    social_security_number: Mapped[str] = mapped_column(
        ForeignKey("persons.social_security_number"), primary_key=True
    )
    insurance_year: Mapped[int] = mapped_column(Integer)
    current_year_fen: Mapped[int] = mapped_column(BigInteger)
    prior_years_fen: Mapped[int] = mapped_column(BigInteger)


class RegistryVersion(Base):
    """One row whose `version` every change of the registry's tables increments (database triggers, so that
    imports, agency commands and a DBA's own SQL all count). Gateways hold registry facts in memory and drop
    them when it moves."""

    __tablename__ = "registry_version"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
