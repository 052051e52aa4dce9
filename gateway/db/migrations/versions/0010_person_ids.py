"""The ledger keys persons by the registry's person id, not by the ID number: the number stays in the registry.

Every person gets a `person_id`, drawn at random (the same rule as gateway.registry.models.new_person_id, frozen
here as migrations are). The ledger is rewritten to it: a person's account codes (`person:<ID number>:...` becomes
`person:<person id>:...`, the entries with them), the transactions' holder (`social_security_number` becomes
`person_id`) and the dedupe keys that named the number (`opening:`, `rollover:<year>:`, `payout:<batch>:`), and the
year-to-date totals' key. Balances, amounts, refs and entries are not touched otherwise: every account keeps its
balance and every transaction its entries, so `gateway ledger check` holds as it held.

The request records are left byte for byte as they are: a recorded outcome (gateway.ledger.outcomes) names the
card, never its holder's ID number, so a retry is answered exactly as before.

An ID number the ledger holds that is no person of the registry would have no person id: the upgrade then stops
before changing anything, naming such numbers masked, so that they can be imported first.

The ledger is rewritten set-wise (one UPDATE ... FROM, or one INSERT ... SELECT, per table), so that a ledger of
ten million settlements is not read into Python; only the persons' keys are, in chunks, to draw their ids. On
SQLite the tables altered are copied (Alembic's batch mode) with foreign keys off, and checked after
(gateway.db.migrate); `persons` loses its registry-version triggers in the copy and gets them back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

from gateway.db.migrate import MigrationRefused

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PERSON_ID_RANDOM_BITS = 61
PERSON_ID_FLOOR = 1 << PERSON_ID_RANDOM_BITS
ID_NUMBER_CHARS = 18
PERSON_ID_DIGITS = 19           # every id from PERSON_ID_FLOOR to 2**62 - 1 has 19 digits
CHUNK_ROWS = 20_000             # persons given their id at a time
MAX_NAMED = 5                   # unregistered ID numbers named in the refusal; the count says how many
PERSON_ACCOUNTS = {"person_current_year": ":current_year", "person_prior_years": ":prior_years"}
KEYED_BY_PERSON = ("opening", "rollover", "payout")   # transaction kinds whose dedupe key ends with the person
REGISTRY_VERSION_OPERATIONS = ("insert", "update", "delete")  # migration 0006's SQLite triggers on persons

PERSONS = sa.table("persons", sa.column("social_security_number", sa.String))


def upgrade() -> None:
    bind = op.get_bind()
    _refuse_unregistered_holders(bind)
    with op.batch_alter_table("persons") as batch:
        batch.add_column(sa.Column("person_id", sa.BigInteger(), nullable=True))
    _give_person_ids(bind)
    with op.batch_alter_table("persons") as batch:
        batch.alter_column("person_id", existing_type=sa.BigInteger(), nullable=False)
        batch.create_unique_constraint(batch.f("uq_persons_person_id"), ["person_id"])
    _restore_registry_triggers(bind)

    _rename_person_accounts(bind, to_person_ids=True)

    _replace_holders(bind, "social_security_number", sa.Column("person_id", sa.BigInteger(), nullable=True),
                     ID_NUMBER_CHARS)

    _replace_year_totals(bind, sa.Column("person_id", sa.BigInteger(), autoincrement=False, nullable=False),
                         "persons.person_id", "persons.social_security_number = old.social_security_number")


def downgrade() -> None:
    bind = op.get_bind()
    _replace_year_totals(bind, sa.Column("social_security_number", sa.String(length=18), nullable=False),
                         "persons.social_security_number", "persons.person_id = old.person_id")

    _replace_holders(bind, "person_id", sa.Column("social_security_number", sa.String(length=18), nullable=True),
                     PERSON_ID_DIGITS)

    _rename_person_accounts(bind, to_person_ids=False)

    with op.batch_alter_table("persons") as batch:
        batch.drop_constraint("uq_persons_person_id", type_="unique")
        batch.drop_column("person_id")
    _restore_registry_triggers(bind)


# The upgrade's steps -------------------------------------------------------------------------------------


def _refuse_unregistered_holders(bind: sa.Connection) -> None:
    """Every ID number the ledger holds must be a person of the registry, or it would get no person id."""
    kinds = ", ".join(f"'{kind}'" for kind in PERSON_ACCOUNTS)
    held = ("SELECT social_security_number AS number FROM ledger_transactions WHERE social_security_number IS NOT NULL "
            f"UNION SELECT owner FROM ledger_accounts WHERE kind IN ({kinds}) "
            "UNION SELECT social_security_number FROM year_totals")
    missing = [number for (number,) in bind.execute(sa.text(
        f"SELECT held.number FROM ({held}) AS held WHERE NOT EXISTS "
        "(SELECT 1 FROM persons WHERE persons.social_security_number = held.number) ORDER BY held.number"))]
    if missing:
        named = ", ".join(_masked(number) for number in missing[:MAX_NAMED])
        raise MigrationRefused(
            f"the ledger holds {len(missing)} ID number(s) that are no person of the registry ({named}): import "
            "them (gateway registry import persons.csv) and upgrade again; nothing was migrated")
    unexpected = bind.execute(sa.text(
        f"SELECT count(*) FROM ledger_accounts WHERE kind IN ({kinds}) AND code NOT IN "
        "('person:' || owner || :current_year, 'person:' || owner || :prior_years)"),
        {"current_year": PERSON_ACCOUNTS["person_current_year"],
         "prior_years": PERSON_ACCOUNTS["person_prior_years"]}).scalar_one()
    if unexpected:
        raise MigrationRefused(f"{unexpected} person account(s) whose code is not person:<ID number>:<account>; "
                               "nothing was migrated")


def _masked(number: str) -> str:
    # gateway.identity.mask_id, frozen with the migration.
    return number[:6] + "*" * (len(number) - 10) + number[-4:] if len(number) > 8 else "*" * len(number)


def _give_person_ids(bind: sa.Connection) -> None:
    """A random id for every person. The ids are drawn into a table of their own first, by key in chunks (through
    the driver's executemany as plain tuples: per row, SQLAlchemy would cost more than the insert), and given to
    `persons` by one UPDATE: one UPDATE per person would fire the registry-version trigger once per person on
    PostgreSQL. An id drawn twice (about one chance in 50,000 for a registry of ten million) is drawn again for all
    but one of its persons before the unique constraint is made."""
    op.execute("CREATE TABLE person_ids_given (social_security_number VARCHAR(18) PRIMARY KEY, "
               "person_id BIGINT NOT NULL)")
    mark = "?" if bind.dialect.paramstyle == "qmark" else "%s"
    insert = f"INSERT INTO person_ids_given (social_security_number, person_id) VALUES ({mark}, {mark})"
    chunk = (sa.select(PERSONS.c.social_security_number).where(
        PERSONS.c.social_security_number > sa.bindparam("after")).order_by(PERSONS.c.social_security_number)
        .limit(CHUNK_ROWS))
    after = ""  # before every ID number
    while numbers := list(bind.scalars(chunk, {"after": after})):
        bind.exec_driver_sql(insert, [(number, _new_person_id()) for number in numbers])
        after = numbers[-1]
    while repeated := list(bind.exec_driver_sql(
            "SELECT social_security_number FROM person_ids_given WHERE person_id IN (SELECT person_id FROM "
            "person_ids_given GROUP BY person_id HAVING count(*) > 1) AND social_security_number NOT IN (SELECT "
            "min(social_security_number) FROM person_ids_given GROUP BY person_id HAVING count(*) > 1)").scalars()):
        bind.exec_driver_sql(f"UPDATE person_ids_given SET person_id = {mark} WHERE social_security_number = {mark}",
                             [(_new_person_id(), number) for number in repeated])
    op.execute("UPDATE persons SET person_id = given.person_id FROM person_ids_given AS given "
               "WHERE given.social_security_number = persons.social_security_number")
    op.execute("DROP TABLE person_ids_given")


def _new_person_id() -> int:
    # gateway.registry.models.new_person_id, frozen with the migration.
    return PERSON_ID_FLOOR + secrets.randbits(PERSON_ID_RANDOM_BITS)


def _restore_registry_triggers(bind: sa.Connection) -> None:
    """SQLite drops a table's triggers with it, and batch mode dropped `persons` for its copy: migration 0006's
    triggers, again. (PostgreSQL altered the table in place and kept them.)"""
    if bind.dialect.name != "sqlite":
        return
    for operation in REGISTRY_VERSION_OPERATIONS:
        op.execute(f"DROP TRIGGER IF EXISTS persons_{operation}_changed")
        op.execute(f"CREATE TRIGGER persons_{operation}_changed AFTER {operation.upper()} ON persons "
                   "BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END")


def _rename_person_accounts(bind: sa.Connection, *, to_person_ids: bool) -> None:
    """Each person account under its new code, with its kind, owner, limit and balance; its entries moved to it;
    the old account removed. Written as new rows rather than a changed key, so that the entries' foreign key holds
    at every statement (PostgreSQL checks it there)."""
    if to_person_ids:
        owner, join = "CAST(persons.person_id AS VARCHAR(19))", "persons.social_security_number = a.owner"
    else:
        owner, join = "persons.social_security_number", "CAST(persons.person_id AS VARCHAR(19)) = a.owner"
    # The suffixes are bound: a colon in the SQL's text would read as a parameter.
    suffix = "CASE a.kind " + " ".join(f"WHEN '{kind}' THEN :{kind}" for kind in PERSON_ACCOUNTS) + " END"
    kinds = ", ".join(f"'{kind}'" for kind in PERSON_ACCOUNTS)
    op.execute("CREATE TABLE person_account_codes (old_code VARCHAR(80) PRIMARY KEY, new_code VARCHAR(80) NOT NULL, "
               "new_owner VARCHAR(32) NOT NULL)")
    bind.execute(sa.text(f"INSERT INTO person_account_codes (old_code, new_code, new_owner) SELECT a.code, "
                         f"'person:' || {owner} || {suffix}, {owner} FROM ledger_accounts AS a JOIN persons ON {join} "
                         f"WHERE a.kind IN ({kinds})"), PERSON_ACCOUNTS)
    op.execute("INSERT INTO ledger_accounts (code, kind, owner, must_not_go_negative, balance_fen) "
               "SELECT m.new_code, a.kind, m.new_owner, a.must_not_go_negative, a.balance_fen "
               "FROM ledger_accounts AS a JOIN person_account_codes AS m ON m.old_code = a.code")
    # The entries' index on the account is built again after the update rather than kept up to date through it:
    # each moved entry would move in the index too, a random write each (on SQLite, most of the upgrade's time).
    op.drop_index("ix_ledger_entries_account_code", table_name="ledger_entries")
    op.execute("UPDATE ledger_entries SET account_code = m.new_code FROM person_account_codes AS m "
               "WHERE m.old_code = ledger_entries.account_code")
    op.create_index("ix_ledger_entries_account_code", "ledger_entries", ["account_code"], unique=False)
    op.execute("DELETE FROM ledger_accounts WHERE code IN (SELECT old_code FROM person_account_codes)")
    op.execute("DROP TABLE person_account_codes")
    if to_person_ids:
        left = bind.execute(sa.text(f"SELECT count(*) FROM ledger_accounts WHERE kind IN ({kinds}) AND "
                                    f"length(owner) <> {PERSON_ID_DIGITS}")).scalar_one()
        if left:
            raise MigrationRefused(f"{left} person account(s) kept their ID number; nothing was migrated")


def _replace_holders(bind: sa.Connection, old: str, new: sa.Column[object], old_chars: int) -> None:
    """The transactions' holder as `new` (a column of persons, by which the ledger names them from now on) instead
    of `old`, with its index; the dedupe keys that name the holder name it so."""
    with op.batch_alter_table("ledger_transactions") as batch:
        batch.add_column(new)
    op.execute(f"UPDATE ledger_transactions SET {new.name} = persons.{new.name} FROM persons "
               f"WHERE persons.{old} = ledger_transactions.{old}")
    _rekey(bind, old=old, new=new.name, old_chars=old_chars)
    with op.batch_alter_table("ledger_transactions") as batch:
        batch.drop_index(f"ix_ledger_transactions_{old}")
        batch.drop_column(old)
        batch.create_index(f"ix_ledger_transactions_{new.name}", [new.name], unique=False)


def _rekey(bind: sa.Connection, *, old: str, new: str, old_chars: int) -> None:
    """The dedupe keys that end with the person (`opening:`, `rollover:<year>:`, `payout:<batch>:` + the person)
    end with the person's `new` form instead; every one of them must end with its `old` form."""
    kinds = ", ".join(f"'{kind}'" for kind in KEYED_BY_PERSON)
    old_text = f"CAST({old} AS VARCHAR(19))" if old == "person_id" else old
    new_text = f"CAST({new} AS VARCHAR(19))" if new == "person_id" else new
    keyed = f"kind IN ({kinds}) AND dedupe_key IS NOT NULL"
    odd = bind.execute(sa.text(f"SELECT count(*) FROM ledger_transactions WHERE {keyed} AND "
                               f"({old} IS NULL OR dedupe_key NOT LIKE '%:' || {old_text})")).scalar_one()
    if odd:
        raise MigrationRefused(f"{odd} opening, rollover or payout transaction(s) whose dedupe key does not end with "
                               "its holder; nothing was migrated")
    op.execute(f"UPDATE ledger_transactions SET dedupe_key = substr(dedupe_key, 1, length(dedupe_key) - {old_chars}) "
               f"|| {new_text} WHERE {keyed}")


def _replace_year_totals(bind: sa.Connection, key: sa.Column[object], value: str, join: str) -> None:
    """year_totals keyed by `key` instead: a new table filled from the old one (its key is its primary key, which
    no batch of ALTERs changes alike on both databases)."""
    op.rename_table("year_totals", "year_totals_old")
    if bind.dialect.name == "postgresql":
        # The primary key's name is the schema's, not the table's: freed for the new table.
        op.execute("ALTER TABLE year_totals_old RENAME CONSTRAINT pk_year_totals TO pk_year_totals_old")
    op.create_table(
        "year_totals",
        key,
        sa.Column("insurance_year", sa.Integer(), nullable=False),
        sa.Column("deductible_counted_fen", sa.BigInteger(), nullable=False),
        sa.Column("pooled_fund_paid_fen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(key.name, "insurance_year", name=op.f("pk_year_totals")),
    )
    op.execute(f"INSERT INTO year_totals ({key.name}, insurance_year, deductible_counted_fen, pooled_fund_paid_fen) "
               f"SELECT {value}, old.insurance_year, old.deductible_counted_fen, old.pooled_fund_paid_fen "
               f"FROM year_totals_old AS old JOIN persons ON {join}")
    op.drop_table("year_totals_old")
