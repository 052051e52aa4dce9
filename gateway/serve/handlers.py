"""ReadCard, QueryBalance, PreSettle, Settle, Revoke, Reverse and QueryTransaction, end to end.

read the card (the reader serving the terminal) -> registry facts -> rules -> the PIN on the card where
the rules want it -> the ledger's writer -> the answer, sent only after the ledger's commit returned.

A money message (PreSettle, Settle, Revoke, Reverse) under a key the ledger records is answered from the record
(docs/protocol.md 2.6): the record is consulted before anything the record makes moot reaches the card or the
terminal — before the card is read, before the PIN is verified, before a refusal is sent — and the writer
consults it again, first, in the transaction that would write. What that costs is said where it is done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from twisted.logger import Logger

from gateway.identity import mask_id
from gateway.ledger.intents import ReverseIntent, RevokeIntent, SettleIntent
from gateway.ledger.outcomes import HolderBalances, Outcome, Refused, Settled
from gateway.ledger.reads import LedgerReader
from gateway.ledger.records import Recorded, repeated
from gateway.ledger.writer import LedgerWriter
from gateway.ops.logs import debug_enabled, error_line
from gateway.ops.metrics import GatewayMetrics
from gateway.protocol.messages import pb
from gateway.protocol.responses import make_response
from gateway.protocol.send_time import CHECKED_BODIES, DEFAULT_SEND_TIME_WINDOW_S, SendTimeProblem, send_time_problem
from gateway.protocol.session import MAX_MESSAGE_ID_CHARS, RequestReceived
from gateway.protocol.status import status_name
from gateway.reader.card import CardData
from gateway.reader.driver import SocialSecurityCardDriver
from gateway.reader.errors import CardProblem, CardRemoved, PinLocked, PinWrong
from gateway.registry.directory import TerminalRecord
from gateway.serve.answers import answer, content_hash, fill_balances, fill_split, refusal, transaction_result
from gateway.serve.readers import ReaderAssignments
from gateway.serve.reads import load_state, load_state_and_record
from gateway.serve.registry_cache import RegistryCache
from gateway.settlement.facts import (
    Balances,
    ChipFacts,
    Facts,
    InsuranceType,
    Purpose,
    SettlementRequest,
    YearToDate,
)
from gateway.settlement.policy import PolicyBook
from gateway.settlement.rules import Decision, Refusal, admit, decide, has_filing_here, settlement_needs_pin

log = Logger(namespace="gateway.serve.handlers")
T = TypeVar("T")
_OK = status_name(pb.STATUS_CODE_OK)

INSURANCE_TYPES = {
    InsuranceType.EMPLOYEE_ACTIVE: pb.INSURANCE_TYPE_EMPLOYEE_ACTIVE,
    InsuranceType.EMPLOYEE_RETIRED: pb.INSURANCE_TYPE_EMPLOYEE_RETIRED,
    InsuranceType.RESIDENT: pb.INSURANCE_TYPE_RESIDENT,
}


# A settlement id (gateway.ledger.batch.new_ref: 21 characters) as a request may name one.
MAX_SETTLEMENT_ID_CHARS = 32

# The bodies this module answers; gateway.serve.dispatch routes them here.
BODIES = frozenset({"read_card", "query_balance", "pre_settle", "settle", "revoke", "reverse", "query_transaction"})
# Those that read the card in the terminal's reader.
CARD_BODIES = frozenset({"read_card", "query_balance", "pre_settle", "settle"})


# The longest settlement id a Revoke may name (the ledger's ids are shorter).
MAX_SETTLEMENT_ID_CHARS = 32


@dataclass
class Served:
    """What answering one request taught that its Response does not say: for the audit line (gateway.serve.audit)."""

    retry: bool = False  # answered from the ledger's record of an earlier, identical request


class Unavailable(Exception):
    """The database could not be reached: the terminal is told to retry."""


class DecisionIncomplete(RuntimeError):
    """The rules accepted a request without what accepting it promises (a holder, a registered card, a split): a
    bug in the rules. The request is answered INTERNAL_ERROR (gateway.serve.dispatch)."""


class SettlementHandlers:
    def __init__(
        self,
        *,
        engine: Engine,
        run_blocking: Callable[..., Any],
        writer: LedgerWriter,
        policies: PolicyBook,
        readers: ReaderAssignments,
        card_cache: dict[str, CardData],
        today: Callable[[], date],
        now: Callable[[], datetime],
        registry: RegistryCache,
        send_time_window_s: float = DEFAULT_SEND_TIME_WINDOW_S,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self.registry = registry
        writer.on_registry_write = self.registry.written_by_ledger
        self._run_blocking = run_blocking
        self.writer = writer
        self.ledger = LedgerReader(engine)
        self.policies = policies
        self._readers = readers
        self._cards = card_cache
        self._today = today
        self._now = now
        self._send_time_window_s = send_time_window_s

    async def _blocking(self, function: Callable[..., Any], *args: Any) -> Any:
        return await _available(self._run_blocking(function, *args))

    # Entry point ---------------------------------------------------------------------------------

    async def handle(self, terminal: TerminalRecord, relay: Any, event: RequestReceived,
                     key: str, served: Served | None = None) -> pb.Response:
        """`key` names where the card read at this terminal is remembered (gateway.serve.dispatch.card_key);
        `served` learns whether the answer is a recorded one."""
        message_id = event.request.message_id
        served = served if served is not None else Served()
        try:
            if event.body in CHECKED_BODIES and (stale := send_time_problem(
                    event.request, self._now().timestamp(), self._send_time_window_s)) is not None:
                return await self._off_the_clock(terminal, event, stale, served)
            if event.body == "read_card":
                return await self._read_card(terminal, relay, event, key)
            if event.body == "query_balance":
                return await self._query_balance(terminal, relay, event, key)
            if event.body in ("pre_settle", "settle"):
                return await self._settle(terminal, relay, event, key, served, write=event.body == "settle")
            if event.body == "revoke":
                return await self._revoke(terminal, event, served)
            if event.body == "reverse":
                return await self._reverse(terminal, event, served)
            if event.body == "query_transaction":
                return await self._query_transaction(terminal, event)
            raise ValueError(f"{event.body} is not answered here (gateway.serve.handlers.BODIES)")
        except CardProblem as problem:
            if problem.status in (pb.STATUS_CODE_CARD_NOT_PRESENT, pb.STATUS_CODE_CARD_REMOVED):
                self._cards.pop(key, None)
            response = make_response(message_id, problem.status, detail_en=problem.detail_en,
                                     detail_zh=problem.detail_zh)
            if isinstance(problem, PinWrong):
                response.pin_tries_left = problem.tries_left
            return response
        except Unavailable:
            return refusal(message_id, pb.STATUS_CODE_TEMPORARILY_UNAVAILABLE, "the database cannot be reached",
                           "数据库暂时不可用")

    async def _off_the_clock(self, terminal: TerminalRecord, event: RequestReceived, problem: SendTimeProblem,
                             served: Served) -> pb.Response:
        """A Settle, Revoke or Reverse without a send_time near now. Under a recorded key it gets the recorded answer
        (an exact retry, and no money moves for it); anything new is refused before the card or the ledger is asked.
        One look-up, for such requests only."""
        request = event.request
        recorded = await self._recorded(terminal, request.message_id, content_hash(request), served)
        if recorded is not None:
            return recorded
        return refusal(request.message_id, problem.status, problem.detail_en, problem.detail_zh)

    # The card and the facts --------------------------------------------------------------------

    def _driver(self, terminal: TerminalRecord, relay: Any, token: int) -> SocialSecurityCardDriver:
        reader = self._readers.reader_for(terminal.terminal_id, terminal.reader, relay, token)
        return SocialSecurityCardDriver(reader, today=self._today)

    async def _card(self, terminal: TerminalRecord, relay: Any, token: int, key: str, fresh: bool = False
                    ) -> CardData:
        cached = None if fresh else self._cards.get(key)
        if cached is not None:
            return cached
        try:
            card: CardData = await self._driver(terminal, relay, token).read()
        except CardProblem as problem:
            self._card_read(terminal, status_name(problem.status))
            raise
        self._card_read(terminal, _OK)
        self._cards[key] = card
        return card

    def _card_read(self, terminal: TerminalRecord, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.card_read(self._readers.spec_for(terminal.terminal_id, terminal.reader).kind, outcome)

    async def _facts(self, terminal: TerminalRecord, card: CardData, request: SettlementRequest) -> Facts:
        """The facts the rules decide on, with the balances and year-to-date totals as the database has them now
        (what QueryBalance shows)."""
        registry, institution, balances, year_to_date = await self._blocking(
            load_state, self._engine, terminal.institution_code, card.card_number, card.social_security_number,
            request.on.year)
        return Facts(request, _chip(card), registry, institution, balances, year_to_date)

    async def _facts_and_record(self, terminal: TerminalRecord, card: CardData, request: SettlementRequest,
                                message_id: str) -> tuple[Facts, Recorded | None]:
        """_facts, and what the ledger records under the request's key: one statement (PreSettle)."""
        (registry, institution, balances, year_to_date), recorded = await self._blocking(
            load_state_and_record, self._engine, terminal.institution_code, card.card_number,
            card.social_security_number, request.on.year, terminal.terminal_id, message_id)
        return Facts(request, _chip(card), registry, institution, balances, year_to_date), recorded

    async def _recorded(self, terminal: TerminalRecord, message_id: str, digest: str, served: Served
                        ) -> pb.Response | None:
        """The answer the ledger's record under the request's key gives it, if the ledger holds the key: one
        look-up by primary key in the database thread pool."""
        recorded = await self._blocking(self.ledger.find_request, terminal.terminal_id, message_id)
        return _answer(served, message_id, repeated(message_id, recorded, digest)) if recorded is not None else None

    async def _registry_facts(self, terminal: TerminalRecord, card: CardData, request: SettlementRequest) -> Facts:
        """The facts without balances, from the registry held in memory: for ReadCard and Settle, where whether
        to refuse and whether a PIN is needed is all the gateway decides before the ledger (neither depends on
        balances; the writer decides the split on the balances it locks)."""
        registry, institution = await _available(self.registry.facts(
            terminal.institution_code, card.card_number, card.social_security_number))
        return Facts(request, _chip(card), registry, institution)

    async def _pin_pad(self, terminal: TerminalRecord, relay: Any, token: int, pin: str) -> bool:
        """Whether the PIN is typed on the reader's own pad. A request that carries a PIN to such a reader is refused:
        the PIN is never to leave the counter there, and what was sent is not used."""
        pad: bool = await self._driver(terminal, relay, token).has_pin_pad()
        if pad and pin:
            raise CardProblem("this terminal's reader has a PIN pad: the holder types the PIN there; send no PIN",
                              "本终端读卡器带密码键盘：请持卡人在键盘上输入密码，报文中不得携带密码",
                              status=pb.STATUS_CODE_BAD_REQUEST)
        return pad

    async def _verify_pin(self, terminal: TerminalRecord, relay: Any, token: int, key: str, pin: str,
                          card: CardData, pad: bool) -> None:
        """VERIFY on the card in the reader, checking in the same script that it is the card the facts came from;
        with a pad the holder types the PIN there and only the card's status word comes back."""
        driver = self._driver(terminal, relay, token)
        try:
            if pad:
                await driver.verify_pin_on_pad(card.card_number)
            else:
                await driver.verify_pin(pin, card.card_number)
        except CardRemoved:
            self._cards.pop(key, None)
            raise
        except PinLocked as locked:
            if locked.just_now and self._metrics is not None:
                self._metrics.pin_locked()
            raise

    # ReadCard ------------------------------------------------------------------------------------

    async def _read_card(self, terminal: TerminalRecord, relay: Any, event: RequestReceived, key: str
                         ) -> pb.Response:
        message_id = event.request.message_id
        card = await self._card(terminal, relay, event.token, key, fresh=True)
        if debug_enabled():
            log.debug("card {card_number} ({holder}) read at {terminal_id}", card_number=card.card_number,
                      holder=mask_id(card.social_security_number), terminal_id=terminal.terminal_id)
        facts = await self._registry_facts(terminal, card, SettlementRequest(Purpose.READ_CARD, self._today()))
        outcome = decide(facts, self.policies)
        if isinstance(outcome, Refusal):
            return _refusal(message_id, outcome)
        response = make_response(message_id, pb.STATUS_CODE_OK)
        fill_card(response.read_card.card, card)
        person = facts.registry.person
        registered = facts.registry.card
        if person is None or registered is None:
            raise DecisionIncomplete("the rules accepted a card without a registered card and holder")
        response.read_card.card.kind = (pb.CARD_KIND_OLD_MEDICAL_IC if registered.kind.value == "old_medical_ic"
                                        else pb.CARD_KIND_SOCIAL_SECURITY)
        insured = response.read_card.insured
        insured.insurance_type = INSURANCE_TYPES[person.insurance_type]
        insured.insured_region_code = person.insured_region_code
        insured.pin_required = settlement_needs_pin(facts)
        insured.filed_for_care_elsewhere = has_filing_here(facts)
        return response

    # QueryBalance ----------------------------------------------------------------------------------

    async def _query_balance(self, terminal: TerminalRecord, relay: Any, event: RequestReceived, key: str
                             ) -> pb.Response:
        message_id, body = event.request.message_id, event.request.query_balance
        card = await self._card(terminal, relay, event.token, key)
        pad = await self._pin_pad(terminal, relay, event.token, body.pin)
        facts = await self._facts(terminal, card, SettlementRequest(Purpose.QUERY_BALANCE, self._today(),
                                                                         pin_supplied=pad or bool(body.pin)))
        outcome = decide(facts, self.policies)
        if isinstance(outcome, Refusal):
            return _refusal(message_id, outcome)
        if outcome.pin_required:
            await self._verify_pin(terminal, relay, event.token, key, body.pin, card, pad)
        response = make_response(message_id, pb.STATUS_CODE_OK)
        response.query_balance.card_number = card.card_number
        self._fill_balances(response.query_balance.balances, facts, facts.balances, facts.year_to_date)
        return response

    def _fill_balances(self, message: pb.Balances, facts: Facts, balances: Balances, ytd: YearToDate) -> None:
        policy = self.policies.for_date(facts.request.on)
        person = facts.registry.person
        if person is None:
            raise DecisionIncomplete("the rules accepted a request without a holder")
        deductible, cap = policy.limits_for(person.insurance_type) if policy is not None else (0, 0)
        fill_balances(message, HolderBalances(facts.request.on.year, balances.current_year_fen,
                                              balances.prior_years_fen, ytd.deductible_counted_fen, deductible,
                                              ytd.pooled_fund_paid_fen, cap))

    # PreSettle and Settle --------------------------------------------------------------------------

    async def _settle(self, terminal: TerminalRecord, relay: Any, event: RequestReceived, key: str, served: Served,
                      write: bool) -> pb.Response:
        request = event.request
        message_id = request.message_id
        body = request.settle if write else request.pre_settle
        # A PreSettle records nothing, but under a recorded key it is that key's other content (DUPLICATE_MESSAGE_ID)
        # or a tombstoned key's late arrival (MESSAGE_ID_REVERSED), and is answered so.
        digest = content_hash(request)
        # No card read kept here: the record before the card is read (one look-up; the read it may spare is a round
        # trip to the terminal's reader).
        if key not in self._cards and (
                recorded := await self._recorded(terminal, message_id, digest, served)) is not None:
            return recorded
        card = await self._card(terminal, relay, event.token, key)
        pad = await self._pin_pad(terminal, relay, event.token, body.pin)
        settle_request = SettlementRequest(
            Purpose.SETTLE, self._today(), int(body.medical_type), body.total_fen,
            tuple(item.amount_fen for item in body.items), pin_supplied=pad or bool(body.pin))
        if write:
            facts = await self._registry_facts(terminal, card, settle_request)
        else:
            # The record comes with the facts, in the statement PreSettle runs anyway (no extra round trip), after
            # the card read and before the rules and the PIN.
            facts, record = await self._facts_and_record(terminal, card, settle_request, message_id)
            if record is not None:
                return _answer(served, message_id, repeated(message_id, record, digest))
        # A Settle's split is the writer's, on the balances it locks: here only the rules' refusals and the PIN,
        # which read no balance (gateway.settlement.rules.admit). A PreSettle is answered here, split and all.
        outcome = admit(facts, self.policies) if write else decide(facts, self.policies)
        if isinstance(outcome, Refusal):
            # A refused Settle looks again, even after a look-up before the card read: the original of a retry may
            # have gone through meanwhile and now be refused (its own first use of the card cancelled the old
            # one), and its one outcome is what it gets. Refusals are rare; it costs them one look-up.
            if write and (recorded := await self._recorded(terminal, message_id, digest, served)) is not None:
                return recorded
            return _refusal(message_id, outcome)
        if outcome.pin_required:
            # The record right before VERIFY, which a wrong PIN would cost one of the card's six tries — also after
            # a look-up before the card read, as the original of a retry may commit while the card is read. One
            # look-up, on the PIN path only (a holder from another city), before a round trip to the card.
            if write and (recorded := await self._recorded(terminal, message_id, digest, served)) is not None:
                return recorded
            # Verified on the card itself, before anything is written.
            await self._verify_pin(terminal, relay, event.token, key, body.pin, card, pad)
        # An in-city Settle with its card read kept has not looked (and costs no look-up): the writer answers a
        # recorded key from its record, first, in the transaction that would write (its batch reads the records
        # of all its intents in one statement). Only the rules, pure and in memory, ran before.
        if isinstance(outcome, Decision):
            return self._pre_settlement(message_id, card, facts, outcome)
        intent = SettleIntent(terminal.terminal_id, message_id, digest, facts, card.card_number, self._now(),
                              admitted=outcome)
        settled: Outcome = await self.writer.submit(intent)
        if isinstance(settled, Settled) and debug_enabled():
            log.debug("settled {settlement_id} at {terminal_id}: {total} fen ({holder})",
                     settlement_id=settled.settlement_id, terminal_id=terminal.terminal_id,
                     total=settled.split.total_fen, holder=mask_id(card.social_security_number))
        return _answer(served, message_id, settled)

    def _pre_settlement(self, message_id: str, card: CardData, facts: Facts, outcome: Decision) -> pb.Response:
        split = outcome.split
        if split is None:
            raise DecisionIncomplete("the rules accepted a pre-settlement without a split")
        response = make_response(message_id, pb.STATUS_CODE_OK)
        result = response.pre_settle
        result.card_number = card.card_number
        fill_split(result.split, split)
        after = Balances(facts.balances.current_year_fen - split.current_year_account_fen,
                         facts.balances.prior_years_fen - split.prior_years_account_fen)
        ytd = YearToDate(facts.year_to_date.deductible_counted_fen + split.deductible_counted_fen,
                         facts.year_to_date.pooled_fund_paid_fen + split.pooled_fund_fen)
        self._fill_balances(result.balances_after, facts, after, ytd)
        result.policy_version = outcome.policy_version or ""
        return response

    # Revoke, Reverse, QueryTransaction --------------------------------------------------------------

    async def _revoke(self, terminal: TerminalRecord, event: RequestReceived, served: Served) -> pb.Response:
        request = event.request
        settlement_id = request.revoke.settlement_id
        digest = content_hash(request)
        if not 0 < len(settlement_id) <= MAX_SETTLEMENT_ID_CHARS:
            # Under a recorded key this is other content: the record answers (a look-up for malformed ones only).
            if (recorded := await self._recorded(terminal, request.message_id, digest, served)) is not None:
                return recorded
            return refusal(request.message_id, pb.STATUS_CODE_BAD_REQUEST, "revoke.settlement_id is required",
                           "缺少结算编号")
        intent = RevokeIntent(terminal.terminal_id, request.message_id, digest, terminal.institution_code,
                              settlement_id, self._now())
        return _answer(served, request.message_id, await self.writer.submit(intent))

    async def _reverse(self, terminal: TerminalRecord, event: RequestReceived, served: Served) -> pb.Response:
        request = event.request
        original = request.reverse.original_message_id
        digest = content_hash(request)
        if not 0 < len(original) <= MAX_MESSAGE_ID_CHARS or original == request.message_id:
            if (recorded := await self._recorded(terminal, request.message_id, digest, served)) is not None:
                return recorded
            return refusal(request.message_id, pb.STATUS_CODE_BAD_REQUEST,
                           "reverse.original_message_id must name another message of this terminal",
                           "缺少或错误的原报文编号")
        intent = ReverseIntent(terminal.terminal_id, request.message_id, digest, original, self._now())
        return _answer(served, request.message_id, await self.writer.submit(intent))

    async def _query_transaction(self, terminal: TerminalRecord, event: RequestReceived) -> pb.Response:
        request = event.request
        key = request.query_transaction.WhichOneof("key")
        if key is None:
            return refusal(request.message_id, pb.STATUS_CODE_BAD_REQUEST,
                           "query_transaction needs message_id or settlement_id", "缺少查询条件")
        value = getattr(request.query_transaction, key)
        longest = MAX_MESSAGE_ID_CHARS if key == "message_id" else MAX_SETTLEMENT_ID_CHARS
        if len(value) > longest:
            # Never echoed: a 40,000-character id would make the answer too large to send.
            return refusal(request.message_id, pb.STATUS_CODE_BAD_REQUEST,
                           f"query_transaction.{key} is {len(value)} characters long, at most {longest}",
                           f"查询条件{key}长{len(value)}个字符，上限{longest}个")
        found = await self._blocking(
            self.ledger.query_transaction, terminal.terminal_id, terminal.institution_code,
            value if key == "message_id" else None, value if key == "settlement_id" else None)
        if found is None:
            return refusal(request.message_id, pb.STATUS_CODE_ORIGINAL_NOT_FOUND, f"nothing under {value}",
                           f"未找到{value}")
        response = make_response(request.message_id, pb.STATUS_CODE_OK)
        response.query_transaction.CopyFrom(transaction_result(found))
        return response


async def _available(pending: Awaitable[T]) -> T:
    """`pending`'s result; a database that cannot be reached becomes Unavailable (the terminal retries)."""
    try:
        return await pending
    except DBAPIError as exc:
        log.warn("database unavailable: {error}", error=error_line(exc))
        raise Unavailable() from exc


def _answer(served: Served, message_id: str, outcome: Outcome) -> pb.Response:
    """The Response carrying a ledger's outcome; `served` notes whether it is a recorded one, answering a retry."""
    served.retry = not isinstance(outcome, Refused) and outcome.repeated
    return answer(message_id, outcome)


def _chip(card: CardData) -> ChipFacts:
    return ChipFacts(card.card_number, card.social_security_number, card.issuing_region_code, card.expiry_date)


def _refusal(message_id: str, rule: Refusal) -> pb.Response:
    return refusal(message_id, rule.status, rule.detail_en, rule.detail_zh)


def fill_card(message: pb.Card, card: CardData) -> None:
    for name, value in card.as_dict().items():
        setattr(message, name, value)
