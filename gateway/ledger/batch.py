"""One group-commit batch: many intents decided against the database's state, written in one transaction.

The batch reads what its intents touch with a few set-wise queries (locking the persons' accounts where
the database has row locks), decides each intent in order against an in-memory copy of that state —
so two settlements for one person in one batch see each other — and writes everything with a few
bulk statements. An intent that is refused writes nothing and does not disturb its batch-mates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, bindparam, or_, select, update

from gateway.ledger import accounts
from gateway.ledger.accounts import AccountSpec
from gateway.ledger.errors import LedgerInvariantBroken
from gateway.ledger.intents import Intent, ReverseIntent, RevokeIntent, SettleIntent, business_date
from gateway.ledger.models import (
    AccountKind,
    RequestOutcome,
    TransactionKind,
)
from gateway.ledger.outcomes import (
    HolderBalances,
    Outcome,
    Refused,
    Reversed,
    ReverseResult,
    Revoked,
    Settled,
    recorded_form,
)
from gateway.ledger.postings import (
    Posting,
    compensation_postings,
    opening_postings,
    postings_of_settlement,
    settlement_accounts,
)
from gateway.ledger.records import Recorded, repeated
from gateway.ledger.sql import (
    add_to_balances,
    hot_sql,
    locked_balances,
    open_accounts,
    pipelines,
    post_once,
    record_row,
    rows_by_keys,
    select_by_keys,
    settlement_row,
    settles_state,
    transaction_row,
)
from gateway.ledger.state import KnownState
from gateway.ledger.tables import ACCOUNTS, ENTRIES, RECORDS, TRANSACTIONS, YEAR_TOTALS
from gateway.ledger.transactions import opening_key, rollover_key, split_amounts, split_of, undone_by
from gateway.protocol.status import StatusCode
from gateway.registry.tables import CARDS, OPENING_BALANCES, PERSONS, REGISTRY_VERSION
from gateway.settlement.calendar import utc_now
from gateway.settlement.facts import (
    Balances,
    CardKind,
    CardStatus,
    Facts,
    InstitutionLevel,
    InsuranceType,
    YearToDate,
)
from gateway.settlement.policy import Policy, PolicyBook
from gateway.settlement.rules import Refusal, SplitTerms, decide, split_on, split_terms
from gateway.settlement.split import FundSplit

CommittedT = TypeVar("CommittedT", Settled, Revoked, Reversed)
_SETTLEMENT = TransactionKind.SETTLEMENT.value
_COMMITTED = RequestOutcome.COMMITTED.value
# What the batch reads of a request record (gateway.ledger.records.Recorded.from_row, and the transaction it made).
_RECORD_READ = ("terminal_id", "message_id", "outcome", "content_hash", "transaction_ref", "recorded_outcome")

# The batch's reads, built once (see gateway.ledger.sql): an IN list of any length is one expanding parameter.
# The ledger keys persons by the registry's person id. Where it reads or writes the registry's rows of a person
# (opening balances, cards), which the registry keys by the ID number, it joins through `persons` and never selects
# the number.
_PERSONS_WITH_ACCOUNTS = select(ACCOUNTS.c.owner).where(
    ACCOUNTS.c.owner.in_(bindparam("owners", expanding=True)),
    ACCOUNTS.c.kind == AccountKind.PERSON_CURRENT_YEAR.value)
_OPENING_BALANCES = (select(PERSONS.c.person_id, OPENING_BALANCES.c.current_year_fen,
                            OPENING_BALANCES.c.prior_years_fen)
                     .join(PERSONS, PERSONS.c.social_security_number == OPENING_BALANCES.c.social_security_number)
                     .where(PERSONS.c.person_id.in_(bindparam("persons", expanding=True))))
_CARDS = select(CARDS.c.card_number, CARDS.c.status, CARDS.c.first_used_on, CARDS.c.kind).where(
    CARDS.c.card_number.in_(bindparam("cards", expanding=True)))
_USED_SOCIAL_SECURITY_CARDS = (select(PERSONS.c.person_id)
                               .join(CARDS, CARDS.c.social_security_number == PERSONS.c.social_security_number)
                               .where(PERSONS.c.person_id.in_(bindparam("persons", expanding=True)),
                                      CARDS.c.kind == CardKind.SOCIAL_SECURITY.value,
                                      CARDS.c.first_used_on.is_not(None)).distinct())
_REGISTRY_VERSION = select(REGISTRY_VERSION.c.version).where(REGISTRY_VERSION.c.id == 1)
_FIRST_USE = (update(CARDS).where(CARDS.c.card_number == bindparam("card"), CARDS.c.first_used_on.is_(None))
              .values(first_used_on=bindparam("day")))


def new_ref(prefix: str, day: date) -> str:
    """A public transaction id: kind letter, the day, 48 random bits (unique across gateway processes)."""
    # The day's digits from isoformat: strftime costs more than the rest of the id.
    return f"{prefix}{day.isoformat().replace('-', '')}{os.urandom(6).hex().upper()}"


# Makes a transaction's public id from its kind letter and business day: new_ref, or a test's deterministic one.
RefMaker = Callable[[str, date], str]


def open_persons(conn: Connection, person_ids: Sequence[int],
                 known_accounts: frozenset[str] | set[str] = frozenset(), *, now: Callable[[], datetime] = utc_now,
                 make_ref: RefMaker = new_ref) -> None:
    """Give each person (by the registry's person id) met for the first time their two accounts and post their
    opening balances, booked at `now()` on its business day."""
    unknown = [person for person in person_ids if accounts.person_current_year(person).code not in known_accounts]
    if not unknown:
        return
    have = set(conn.scalars(_PERSONS_WITH_ACCOUNTS, {"owners": [str(person) for person in unknown]}))
    new = [person for person in unknown if str(person) not in have]
    if not new:
        return
    openings = {row.person_id: (row.current_year_fen, row.prior_years_fen)
                for row in conn.execute(_OPENING_BALANCES, {"persons": new})}
    specs = [spec for person in new
             for spec in (accounts.person_current_year(person), accounts.person_prior_years(person))]
    specs.append(accounts.opening())
    open_accounts(conn, specs)
    moment = now()
    today = business_date(moment)
    openings_to_post: list[tuple[dict[str, Any], list[Posting]]] = []
    for person in new:
        current, prior = openings.get(person, (0, 0))
        if current == 0 and prior == 0:
            continue
        openings_to_post.append(({
            "ref": make_ref("O", today), "kind": TransactionKind.OPENING.value, "dedupe_key": opening_key(person),
            "person_id": person, "business_date": today, "recorded_at": moment, "total_fen": current + prior,
            "current_year_fen": current, "prior_years_fen": prior,
        }, opening_postings(person, current, prior)))
    post_once(conn, openings_to_post)  # another gateway may have opened some first: those stay as they are


@dataclass
class _Transaction:
    """A settlement as the batch knows it (loaded, or written earlier in this batch)."""

    ref: str
    kind: str
    terminal_id: str | None
    institution_code: str | None
    person_id: int | None
    card_number: str | None
    business_date: date
    insurance_year: int | None
    split: FundSplit | None
    entries: list[tuple[str, int]]
    compensated_by: str | None = None  # "revoke" or "reversal"


@dataclass
class _Writes:
    """Rows as the hot writes bind them (gateway.ledger.sql.HotSql)."""

    transactions: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[tuple[str, str, int]] = field(default_factory=list)
    records: list[tuple[Any, ...]] = field(default_factory=list)
    deltas: dict[str, int] = field(default_factory=dict)
    specs: dict[str, AccountSpec] = field(default_factory=dict)
    year_deltas: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (person id, year)
    first_used: dict[str, date] = field(default_factory=dict)  # card -> day
    cancel_old_cards_of: set[int] = field(default_factory=set)  # person id
    first_users: set[str] = field(default_factory=set)  # their social security numbers


@dataclass(frozen=True)
class RegistryChange:
    """What a batch changed in the registry (first uses: the card's first_used_on, the holder's old IC cards
    cancelled): the holders whose registry facts changed, by social security number, and the registry's version
    before and after the batch's own writes. Another writer's change committed before them is not in the span."""

    holders: frozenset[str]
    version_before: int
    version_after: int


class Batch:
    def __init__(self, conn: Connection, policies: PolicyBook, known_accounts: frozenset[str] | set[str] = frozenset(),
                 *, now: Callable[[], datetime] = utc_now, make_ref: RefMaker = new_ref,
                 known: KnownState | None = None,
                 holder_accounts: dict[int, tuple[AccountSpec, AccountSpec]] | None = None) -> None:
        """`known_accounts`: codes of accounts committed earlier (accounts are never removed), which the batch
        neither looks for nor creates again. `now` is the clock of what the batch books on its own (a person's
        opening balances; a request's transactions carry the time it was received), `make_ref` the maker of
        transaction ids. `known`: the state the writer committed last, where the database guarantees that nobody
        wrote since (gateway.ledger.state); the batch reads only what it lacks, and leaves it untouched.
        `holder_accounts`: the holders' two accounts by person id, which the batch adds to (pure values, made from
        the person id alone: the writer keeps them from batch to batch)."""
        self.conn = conn
        self.hot = hot_sql(conn)
        self.known = known
        self.persons: list[int] = []  # the holders (person ids) whose state the batch holds
        self.policies = policies
        self.known_accounts = known_accounts
        self.now = now
        self.make_ref = make_ref
        self.forgot_accounts = False  # set when the database lacked accounts remembered as committed
        self.writes = _Writes()
        self.registry_change: RegistryChange | None = None  # set by the write, when it changed registry rows
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.transactions: dict[str, _Transaction] = {}
        # "rollover:Y:<person id>" of the holders whose year Y, a settlement's year, is rolled over already.
        self.rolled_over: set[str] = set()
        self.balances: dict[str, int] = {}
        self.year_totals: dict[tuple[int, int], list[int]] = {}  # (person id, year)
        self.cards: dict[str, dict[str, Any]] = {}
        self.used_social_security_card: set[int] = set()  # person ids
        # Built once per batch rather than per settlement: the holders' accounts, the accounts of a city's fund and
        # an institution, the split's terms under a policy (by the policy's identity: it outlives the batch, held
        # by the policy book and the intents), a business day and a day as the database binds them.
        self._holder_accounts = holder_accounts if holder_accounts is not None else {}
        self._place_accounts: dict[tuple[str, str], tuple[AccountSpec, AccountSpec, AccountSpec, AccountSpec]] = {}
        self._terms: dict[tuple[int, InsuranceType, int, InstitutionLevel | None], SplitTerms] = {}
        self._bound_days: dict[date, Any] = {}

    # The whole batch -------------------------------------------------------------------------

    def run(self, intents: Sequence[Intent]) -> list[Outcome]:
        self._load(intents)
        outcomes = [self._decide(intent) for intent in intents]
        self._write()
        return outcomes

    # Reading -----------------------------------------------------------------------------------

    def _load(self, intents: Sequence[Intent]) -> None:
        if pipelines(self.conn) and all(type(i) is SettleIntent for i in intents) and self._load_settles(
                cast(Sequence[SettleIntent], intents)):
            return
        keys = {(i.terminal_id, i.message_id) for i in intents}
        keys |= {(i.terminal_id, i.original_message_id) for i in intents if isinstance(i, ReverseIntent)}
        if keys:
            rows = rows_by_keys(self.conn, RECORDS, ("terminal_id", "message_id"), _RECORD_READ, sorted(keys))
            self.records = {(r["terminal_id"], r["message_id"]): r for r in rows}
        refs = {i.settlement_ref for i in intents if isinstance(i, RevokeIntent)}
        refs |= {r["transaction_ref"] for r in self.records.values() if r["transaction_ref"]}
        self._load_transactions(refs)
        if any(isinstance(i, RevokeIntent | ReverseIntent) for i in intents):
            self._load_rollovers()  # only an undoing asks; a batch of Settles reads nothing more
        settles = [i for i in intents if isinstance(i, SettleIntent)]
        persons = {i.facts.registry.person.person_id for i in settles if i.facts.registry.person}
        persons |= {t.person_id for t in self.transactions.values() if t.person_id}
        self._load_persons(sorted(persons), {i.facts.request.on.year for i in settles} | {
            t.insurance_year for t in self.transactions.values() if t.insurance_year})
        self._load_cards({i.card_number for i in settles}, persons)

    def _load_settles(self, intents: Sequence[SettleIntent]) -> bool:
        """PostgreSQL, a batch of Settles only (the common batch): the state `_load` reads, in one round trip
        (gateway.ledger.sql.settles_state) and locked in the same order. False, having only locked, when a key is
        recorded already (a retry) or an account is missing: the batch then reads as any batch does."""
        persons = sorted({i.facts.registry.person.person_id for i in intents if i.facts.registry.person})
        years = sorted({i.facts.request.on.year for i in intents})
        open_persons(self.conn, persons, self.known_accounts, now=self.now, make_ref=self.make_ref)
        codes = [spec.code for person in persons for spec in self._accounts_of(person)]
        year_keys = [(person, year) for person in persons for year in years]
        state = settles_state(self.conn, sorted({(i.terminal_id, i.message_id) for i in intents}), codes, year_keys,
                              sorted({i.card_number for i in intents}), persons, CardKind.SOCIAL_SECURITY.value)
        if state.recorded or len(state.balances) < len(codes):
            return False
        self.persons = persons
        self.balances.update(state.balances)
        for key in year_keys:  # a holder with no row yet has nothing counted in the year
            self.year_totals[key] = list(state.year_totals.get(key, (0, 0)))
        for number, (status, first_used_on, kind) in state.cards.items():
            self.cards[number] = {"card_number": number, "status": status, "first_used_on": first_used_on,
                                  "kind": kind}
        self.used_social_security_card.update(state.used_social_security_card)
        return True

    def _load_transactions(self, refs: set[str]) -> None:
        if not refs:
            return
        rows = self.conn.execute(select(TRANSACTIONS).where(TRANSACTIONS.c.ref.in_(sorted(refs)))).mappings()
        for row in rows:
            # Only a settlement's split is read: it is what a revoke or a reversal gives back. (A rollover's or a
            # subsidy's row records its total alone, which no FundSplit holds.)
            split = split_of(row) if row["kind"] == TransactionKind.SETTLEMENT.value else None
            self.transactions[row["ref"]] = _Transaction(
                row["ref"], row["kind"], row["terminal_id"], row["institution_code"], row["person_id"],
                row["card_number"], row["business_date"], row["insurance_year"], split, [])
        for entry in self.conn.execute(select(ENTRIES.c.transaction_ref, ENTRIES.c.account_code, ENTRIES.c.amount_fen)
                                       .where(ENTRIES.c.transaction_ref.in_(sorted(refs))).order_by(ENTRIES.c.id)):
            self.transactions[entry.transaction_ref].entries.append((entry.account_code, entry.amount_fen))
        for original_ref, undoing in undone_by(self.conn, sorted(refs)).items():
            self.transactions[original_ref].compensated_by = undoing.kind

    def _load_rollovers(self) -> None:
        """Which loaded settlements' holders have had their settlement's year rolled over."""
        keys = sorted({rollover_key(t.insurance_year, t.person_id) for t in self.transactions.values()
                       if t.kind == TransactionKind.SETTLEMENT.value and t.person_id and t.insurance_year})
        if keys:
            self.rolled_over = set(self.conn.scalars(select(TRANSACTIONS.c.dedupe_key).where(
                TRANSACTIONS.c.dedupe_key.in_(keys))))

    def _load_persons(self, persons: list[int], years: set[int]) -> None:
        self.persons = persons
        if not persons:
            return
        known = self.known.balances if self.known is not None else {}
        unknown = []
        for person in persons:
            current_spec, prior_spec = self._accounts_of(person)
            current, prior = current_spec.code, prior_spec.code
            if current in known and prior in known:
                self.balances[current], self.balances[prior] = known[current], known[prior]
            else:
                unknown.append(person)
        if unknown:
            self._read_balances(unknown)
        known_totals = self.known.year_totals if self.known is not None else {}
        pairs = []
        ordered_years = sorted(years)
        for person in persons:
            for year in ordered_years:
                totals = known_totals.get((person, year))
                if totals is None:
                    pairs.append((person, year))
                else:
                    self.year_totals[(person, year)] = list(totals)
        if pairs:
            for pair in pairs:  # a holder with no row yet has nothing counted in the year
                self.year_totals[pair] = [0, 0]
            rows = select_by_keys(self.conn, YEAR_TOTALS, ("person_id", "insurance_year"), pairs, lock=True)
            for row in rows.mappings():
                self.year_totals[(row["person_id"], row["insurance_year"])] = [
                    row["deductible_counted_fen"], row["pooled_fund_paid_fen"]]

    def _read_balances(self, persons: list[int]) -> None:
        open_persons(self.conn, persons, self.known_accounts, now=self.now, make_ref=self.make_ref)
        codes = [spec.code for person in persons for spec in self._accounts_of(person)]
        found = locked_balances(self.conn, codes)
        if len(found) < len(codes):
            # Accounts remembered as committed are not in the database: it lost committed rows (a restore, a
            # failover to a replica that lagged). Trust nothing remembered, and open them as for a newcomer.
            self.known_accounts = frozenset()
            self.forgot_accounts = True
            open_persons(self.conn, persons, self.known_accounts, now=self.now, make_ref=self.make_ref)
            found = locked_balances(self.conn, codes)
        self.balances.update(found)

    def _load_cards(self, card_numbers: set[str], persons: set[int]) -> None:
        known_cards = self.known.cards if self.known is not None else {}
        known_used = self.known.used_social_security_card if self.known is not None else {}
        unread = []
        for number in sorted(card_numbers):
            known_card = known_cards.get(number)
            if known_card is None:
                unread.append(number)
            else:
                status, first_used_on, kind = known_card
                self.cards[number] = {"card_number": number, "status": status, "first_used_on": first_used_on,
                                      "kind": kind}
        if unread:
            rows = self.conn.execute(_CARDS, {"cards": unread}).mappings()
            self.cards.update((row["card_number"], dict(row)) for row in rows)
        unasked = []
        for person in sorted(persons):
            used = known_used.get(person)
            if used is None:
                unasked.append(person)
            elif used:
                self.used_social_security_card.add(person)
        if unasked:
            self.used_social_security_card.update(self.conn.scalars(_USED_SOCIAL_SECURITY_CARDS,
                                                                    {"persons": unasked}))

    def remember(self, state: KnownState) -> None:
        """Leave in `state` what this batch holds once it committed: each holder's balances, year-to-date
        totals, cards and whether a social security card of theirs was used."""
        state.balances.update(self.balances)
        for key, (deductible, pooled) in self.year_totals.items():
            state.year_totals[key] = (deductible, pooled)
        for person in self.persons:
            state.used_social_security_card[person] = person in self.used_social_security_card
        cancelled = bool(self.writes.cancel_old_cards_of)
        if cancelled:
            # Old cards were cancelled by one statement, not one by one, and a card's row does not say whose it
            # is: forget every old card known (a holder's first use of a social security card is rare).
            for number in [n for n, (_, _, kind) in state.cards.items() if kind == CardKind.OLD_MEDICAL_IC.value]:
                del state.cards[number]
        for number, row in self.cards.items():
            kind = row.get("kind")
            if kind is not None and not (cancelled and kind == CardKind.OLD_MEDICAL_IC.value):
                state.cards[number] = (row["status"], row["first_used_on"], kind)

    # Deciding ----------------------------------------------------------------------------------

    def _decide(self, intent: Intent) -> Outcome:
        record = self.records.get((intent.terminal_id, intent.message_id))
        if record is not None:
            return repeated(intent.message_id, Recorded.from_row(record), intent.content_hash)
        if isinstance(intent, SettleIntent):
            return self._settle(intent)
        if isinstance(intent, RevokeIntent):
            return self._revoke(intent)
        return self._reverse(intent)

    def _settle(self, intent: SettleIntent) -> Outcome:
        facts = intent.facts
        registry = facts.registry
        person = registry.person
        card = registry.card
        if person is None or card is None:  # the rules refused these before the ledger was asked
            return Refused(StatusCode.STATUS_CODE_PERSON_NOT_FOUND, "no person", "查无此人")
        holder = person.person_id
        request = facts.request
        year = request.on.year
        # The facts that may have changed since the reactor decided, as this transaction sees them.
        fresh_card = self.cards.get(card.card_number)
        if fresh_card is not None and (card.status != fresh_card["status"]
                                       or card.first_used_on != fresh_card["first_used_on"]):
            card = replace(card, status=CardStatus(fresh_card["status"]), first_used_on=fresh_card["first_used_on"])
        used = holder in self.used_social_security_card
        changed = card is not registry.card or used != person.social_security_card_used
        if changed:
            person = replace(person, social_security_card_used=used)
            facts = replace(facts, registry=replace(registry, card=card, person=person))
        current_spec, prior_spec = self._accounts_of(holder)
        current_code, prior_code = current_spec.code, prior_spec.code
        balances = self.balances
        current_fen, prior_fen = balances.get(current_code, 0), balances.get(prior_code, 0)
        totals = self.year_totals.get((holder, year), [0, 0])
        # Decided once: what the request path's rules admitted holds while the card's state is the one they saw
        # (no rule reads a balance), and only the split is computed here — rules.decision's split, on the balances
        # and year-to-date totals locked, under the admitted policy's terms (computed once per batch). Otherwise,
        # or with no admission, the rules decide it all again on the state locked.
        admitted = intent.admitted
        policy: Policy | None
        split: FundSplit | None = None
        if admitted is None or changed:
            policy = self.policies.for_date(request.on)
            outcome = decide(replace(facts, balances=Balances(current_fen, prior_fen),
                                     year_to_date=YearToDate(totals[0], totals[1])), self.policies)
            if isinstance(outcome, Refusal):
                return Refused(outcome.status, outcome.detail_en, outcome.detail_zh)
            split, policy_version, first_use = outcome.split, outcome.policy_version, outcome.first_use_of_card
        else:
            policy, policy_version, first_use = admitted.policy, None, admitted.first_use_of_card
            if policy is not None:
                split = split_on(self._terms_for(facts, policy), request.total_fen, current_fen, prior_fen,
                                 totals[0], totals[1])
                policy_version = policy.version
        if split is None:
            raise LedgerInvariantBroken(f"the rules settled {intent.message_id} without a split")
        if policy is None:  # the rules refuse a day no policy covers (S0)
            raise LedgerInvariantBroken(f"{intent.message_id} was settled on a day no policy covers")
        terms = self._terms_for(facts, policy)  # found at once: computed for the split above, or now
        recorded_at = intent.recorded_at
        day = business_date(recorded_at)
        ref = self.make_ref("S", day)
        institution_code = facts.institution.code
        postings = postings_of_settlement(
            (current_spec, prior_spec, *self._accounts_at(person.insured_region_code, institution_code)), split)
        self._post(ref, postings)
        moment = self.hot.moment(recorded_at)
        self.writes.transactions.append(settlement_row(
            ref, intent.terminal_id, intent.message_id, institution_code, holder, card.card_number,
            request.medical_type, year, self._bound_day(day), moment, policy_version, split))
        self._add_year(holder, year, split.deductible_counted_fen, split.pooled_fund_fen)
        if first_use:
            self.writes.first_used[card.card_number] = day
            self.writes.cancel_old_cards_of.add(holder)
            self.writes.first_users.add(card.social_security_number)
            self.used_social_security_card.add(holder)
            self.cards.setdefault(card.card_number, {"status": card.status.value})["first_used_on"] = day
        self.transactions[ref] = _Transaction(ref, _SETTLEMENT, intent.terminal_id, institution_code, holder,
                                              card.card_number, day, year, split,
                                              [(spec.code, amount) for spec, amount in postings])
        totals = self.year_totals[(holder, year)]
        settled = Settled(ref, card.card_number, split, HolderBalances(
            year, balances.get(current_code, 0), balances.get(prior_code, 0), totals[0], terms.deductible_fen,
            totals[1], terms.pooled_cap_fen), recorded_at, policy_version or "")
        self._keep_record(intent.terminal_id, intent.message_id, "settle", intent.content_hash, _COMMITTED, ref,
                          recorded_form(settled), recorded_at, moment)
        return settled

    def _accounts_of(self, holder: int) -> tuple[AccountSpec, AccountSpec]:
        """The holder's current-year and prior-years accounts."""
        found = self._holder_accounts.get(holder)
        if found is None:
            found = self._holder_accounts[holder] = (accounts.person_current_year(holder),
                                                     accounts.person_prior_years(holder))
        return found

    def _accounts_at(self, insured_region_code: str, institution_code: str
                     ) -> tuple[AccountSpec, AccountSpec, AccountSpec, AccountSpec]:
        """The rest of a settlement's accounts (gateway.ledger.postings.SettlementAccounts) but the holder's."""
        key = (insured_region_code, institution_code)
        found = self._place_accounts.get(key)
        if found is None:
            found = self._place_accounts[key] = settlement_accounts(0, insured_region_code, institution_code)[2:]
        return found

    def _terms_for(self, facts: Facts, policy: Policy) -> SplitTerms:
        person = facts.registry.person
        key = (id(policy), person.insurance_type if person is not None else InsuranceType.RESIDENT,
               facts.request.medical_type, facts.institution.level)
        terms = self._terms.get(key)
        if terms is None:
            terms = self._terms[key] = split_terms(facts, policy)
        return terms

    def _bound_day(self, day: date) -> Any:
        bound = self._bound_days.get(day)
        if bound is None:
            bound = self._bound_days[day] = self.hot.day(day)
        return bound

    def _compensate(self, original: _Transaction, kind: TransactionKind, intent: Intent) -> tuple[str, FundSplit]:
        """Book the undoing of the settlement `original`: its ref, and the split given back."""
        holder, institution_code, split = _undoable(original)
        day = business_date(intent.recorded_at)
        ref = self.make_ref("R" if kind is TransactionKind.REVOKE else "V", day)
        entries = original.entries
        if original.insurance_year is not None and rollover_key(original.insurance_year, holder) in self.rolled_over:
            # The year's current-year balance has moved into the prior-years account: what the settlement took
            # from the current-year account goes back there, not into the new year's current-year account.
            entries, split = to_prior_years(entries, split, holder)
        postings = compensation_postings(entries, _specs_for(original, holder, institution_code))
        self._post(ref, postings)
        self.writes.transactions.append(transaction_row(
            self.hot, ref=ref, kind=kind.value, dedupe_key=f"compensates:{original.ref}", original_ref=original.ref,
            terminal_id=intent.terminal_id, message_id=intent.message_id, institution_code=institution_code,
            person_id=holder, card_number=original.card_number, insurance_year=original.insurance_year,
            business_date=day, recorded_at=intent.recorded_at, amounts=split_amounts(split, sign=-1)))
        if original.insurance_year is not None:
            self._add_year(holder, original.insurance_year, -split.deductible_counted_fen, -split.pooled_fund_fen)
        original.compensated_by = kind.value
        return ref, split

    def _revoke(self, intent: RevokeIntent) -> Outcome:
        original = self.transactions.get(intent.settlement_ref)
        if original is None or original.kind != TransactionKind.SETTLEMENT.value:
            return Refused(StatusCode.STATUS_CODE_ORIGINAL_NOT_FOUND, f"no settlement {intent.settlement_ref}",
                           f"无结算{intent.settlement_ref}")
        if original.institution_code != intent.institution_code:
            # Checked first: another institution learns nothing about the settlement.
            return Refused(StatusCode.STATUS_CODE_REVOKE_NOT_ALLOWED,
                           f"{original.ref} was settled at another institution", "非本机构结算的交易")
        if original.compensated_by == TransactionKind.REVOKE.value:
            return Refused(StatusCode.STATUS_CODE_ALREADY_REVOKED, f"{original.ref} was revoked",
                           f"{original.ref}已撤销")
        if original.compensated_by == TransactionKind.REVERSAL.value:
            return Refused(StatusCode.STATUS_CODE_ALREADY_REVERSED, f"{original.ref} was reversed",
                           f"{original.ref}已冲正")
        policy = self.policies.for_date(original.business_date)
        window_days = policy.revoke_window_days if policy else 0
        today = business_date(intent.recorded_at)
        if today > original.business_date + timedelta(days=window_days):
            return Refused(
                StatusCode.STATUS_CODE_REVOKE_NOT_ALLOWED,
                f"settled on {original.business_date:%Y-%m-%d}; revoking is allowed for {window_days} days",
                f"结算日期{original.business_date:%Y-%m-%d}，已超过{window_days}天撤销期限")
        ref, refunded = self._compensate(original, TransactionKind.REVOKE, intent)
        revoked = Revoked(original.ref, ref, refunded)
        self._record(intent, "revoke", ref, revoked)
        return revoked

    def _reverse(self, intent: ReverseIntent) -> Outcome:
        target = self.records.get((intent.terminal_id, intent.original_message_id))
        if target is None:
            # It never arrived: a tombstone refuses it should it arrive late.
            self._keep_record(intent.terminal_id, intent.original_message_id, "settle", None,
                              RequestOutcome.TOMBSTONE.value, None, None, intent.recorded_at)
            return self._record(intent, "reverse", None, Reversed(intent.original_message_id,
                                                                  ReverseResult.NEVER_ARRIVED, None))
        if target["outcome"] == RequestOutcome.TOMBSTONE.value:
            return self._record(intent, "reverse", None, Reversed(intent.original_message_id,
                                                                  ReverseResult.ALREADY_REVERSED, None))
        original = self.transactions.get(target["transaction_ref"] or "")
        if original is None or original.kind != TransactionKind.SETTLEMENT.value or original.split is None:
            return Refused(StatusCode.STATUS_CODE_ORIGINAL_NOT_FOUND, "only a settlement can be reversed",
                           "只能冲正结算交易")
        if original.compensated_by == TransactionKind.REVOKE.value:
            return Refused(StatusCode.STATUS_CODE_ALREADY_REVOKED, f"{original.ref} was revoked",
                           f"{original.ref}已撤销")
        if original.compensated_by == TransactionKind.REVERSAL.value:
            return self._record(intent, "reverse", None, Reversed(intent.original_message_id,
                                                                  ReverseResult.ALREADY_REVERSED, None))
        ref, given_back = self._compensate(original, TransactionKind.REVERSAL, intent)
        return self._record(intent, "reverse", ref, Reversed(intent.original_message_id, ReverseResult.REVERSED,
                                                             given_back))

    # Bookkeeping in memory ---------------------------------------------------------------------

    def _post(self, ref: str, postings: list[Posting]) -> None:
        for spec, amount in postings:
            self.writes.entries.append((ref, spec.code, amount))
            self.writes.deltas[spec.code] = self.writes.deltas.get(spec.code, 0) + amount
            self.writes.specs[spec.code] = spec
            if spec.code in self.balances or spec.must_not_go_negative:
                new_balance = self.balances.get(spec.code, 0) + amount
                if spec.must_not_go_negative and new_balance < 0:  # the split never allows it
                    raise LedgerInvariantBroken(f"{spec.code} would go negative")
                self.balances[spec.code] = new_balance

    def _add_year(self, person_id: int, year: int, deductible: int, pooled: int) -> None:
        totals = self.year_totals.setdefault((person_id, year), [0, 0])
        totals[0] += deductible
        totals[1] += pooled
        delta = self.writes.year_deltas.setdefault((person_id, year), [0, 0])
        delta[0] += deductible
        delta[1] += pooled

    def _record(self, intent: Intent, body: str, ref: str | None, outcome: CommittedT) -> CommittedT:
        """Record `outcome` under the intent's key, as what a retry gets; `outcome` back."""
        self._keep_record(intent.terminal_id, intent.message_id, body, intent.content_hash,
                          RequestOutcome.COMMITTED.value, ref, recorded_form(outcome), intent.recorded_at)
        return outcome

    def _keep_record(self, terminal_id: str, message_id: str, body: str, content_hash: str | None, outcome: str,
                     ref: str | None, recorded_outcome: str | None, recorded_at: datetime,
                     moment: Any = None) -> None:
        """A request record to write, and to find under its key later in this batch (as a loaded row). `moment`:
        `recorded_at` as the database binds it, where the caller converted it already."""
        self.records[(terminal_id, message_id)] = {"outcome": outcome, "content_hash": content_hash,
                                                   "transaction_ref": ref, "recorded_outcome": recorded_outcome}
        self.writes.records.append(record_row(
            terminal_id, message_id, body, content_hash, outcome, ref, recorded_outcome,
            self.hot.moment(recorded_at) if moment is None else moment))

    def accounts_opened(self) -> set[str]:
        """The codes of every account this batch found or created: after its commit, known to exist."""
        return set(self.balances) | set(self.writes.specs)

    # Writing -----------------------------------------------------------------------------------

    def _write(self) -> None:
        writes, conn = self.writes, self.conn
        hot = self.hot
        open_accounts(conn, [spec for code, spec in writes.specs.items() if code not in self.known_accounts])
        if writes.transactions:
            conn.exec_driver_sql(hot.insert_transactions, writes.transactions)
        if writes.entries:
            conn.exec_driver_sql(hot.insert_entries, writes.entries)
        add_to_balances(conn, writes.deltas)
        if writes.year_deltas:
            conn.exec_driver_sql(hot.add_to_year_totals, [(person, year, d, p) for (person, year), (d, p)
                                                          in sorted(writes.year_deltas.items())])
        if writes.records:
            conn.exec_driver_sql(hot.insert_records, writes.records)
        if writes.first_used:
            self.registry_change = self._write_first_uses()

    def _write_first_uses(self) -> RegistryChange:
        """The cards' first use and the holders' old IC cards cancelled, and the registry's version span they
        moved (so that a cache of registry facts forgets only these holders, gateway.serve.registry_cache)."""
        writes, conn = self.writes, self.conn
        first_uses = [{"card": card, "day": day} for card, day in sorted(writes.first_used.items())]
        used = conn.execute(_FIRST_USE, first_uses)
        cancelled = conn.execute(update(CARDS).where(
            CARDS.c.social_security_number.in_(select(PERSONS.c.social_security_number).where(
                PERSONS.c.person_id.in_(sorted(writes.cancel_old_cards_of)))),
            CARDS.c.kind == CardKind.OLD_MEDICAL_IC.value,
            or_(CARDS.c.status == CardStatus.ACTIVE.value, CARDS.c.status == CardStatus.LOST_REPORTED.value),
        ).values(status=CardStatus.CANCELLED.value))
        # Read after the writes: their triggers hold the version's row (PostgreSQL) or the batch holds the write
        # lock (SQLite), so nobody moves it before the commit. How far these two statements moved it follows
        # migration 0006's triggers: SQLite's count rows, PostgreSQL's count statements (an executemany runs the
        # statement once per parameter set).
        after: int = conn.execute(_REGISTRY_VERSION).scalar_one()
        moved = used.rowcount + cancelled.rowcount if conn.dialect.name == "sqlite" else len(first_uses) + 1
        return RegistryChange(frozenset(writes.first_users), after - moved, after)


def _undoable(original: _Transaction) -> tuple[int, str, FundSplit]:
    """What undoing a settlement needs, which every settlement row has: its holder, institution and split."""
    if original.person_id is None or original.institution_code is None or original.split is None:
        raise LedgerInvariantBroken(f"settlement {original.ref} lacks its holder, institution or split")
    return original.person_id, original.institution_code, original.split


def to_prior_years(entries: list[tuple[str, int]], split: FundSplit, person_id: int
                   ) -> tuple[list[tuple[str, int]], FundSplit]:
    """A settlement's entries and split with its current-year account's share moved to the prior-years account."""
    current, prior = accounts.person_current_year(person_id).code, accounts.person_prior_years(person_id).code
    moved: dict[str, int] = {}
    for code, amount in entries:
        target = prior if code == current else code
        moved[target] = moved.get(target, 0) + amount
    return list(moved.items()), replace(
        split, current_year_account_fen=0,
        prior_years_account_fen=split.prior_years_account_fen + split.current_year_account_fen)


def _specs_for(original: _Transaction, person_id: int, institution_code: str) -> dict[str, AccountSpec]:
    """The accounts a settlement may have moved, by code: those its undoing moves back."""
    region = next((code.split(":")[1] for code, _ in original.entries if code.startswith("fund:")), "0000")
    candidates = [accounts.person_current_year(person_id), accounts.person_prior_years(person_id),
                  accounts.pooled_fund(region + "00"), accounts.persons_cash(),
                  accounts.institution_receivable(institution_code), accounts.institution_cash(institution_code)]
    return {spec.code: spec for spec in candidates}


__all__ = ["Batch", "RefMaker", "new_ref", "open_persons"]
