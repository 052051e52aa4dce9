"""What a simulated counter does, and the answer each step must get.

Every scenario inserts a card of the demo population into the terminal's reader, runs its requests,
checks every answer against what the Ningbo rules say it must be, and removes the card. A wrong answer is
an `unexpected` entry; the run's exit status says whether there were any.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

from twisted.internet import defer, task

from gateway.demo.card import CardStateStore, VirtualCard
from gateway.demo.population import DEFAULT_PERSONS, Case, DemoHolder, demo_population
from gateway.protocol.messages import pb
from gateway.protocol.status import status_name
from simulators.terminal import SimTerminal, Unanswered

OK = pb.STATUS_CODE_OK
HOSPITAL = "H33020300001"   # tertiary, designated for cross-region settlement
PHARMACY = "P33020300004"   # designated pharmacy
Scenario = Callable[["RunContext", SimTerminal], Awaitable[None]]


def split_dict(split: pb.FundSplit) -> dict[str, int]:
    return {"total_fen": split.total_fen, "pooled_fund_fen": split.pooled_fund_fen,
            "current_year_account_fen": split.current_year_account_fen,
            "prior_years_account_fen": split.prior_years_account_fen, "cash_fen": split.cash_fen,
            "deductible_counted_fen": split.deductible_counted_fen}


@dataclass
class RunContext:
    """What the scenarios of one simulator process share."""

    run_id: str
    rng: random.Random
    partition: tuple[int, int] = (0, 1)       # this process's share of the population: (index, count)
    persons: int = DEFAULT_PERSONS
    outcomes: IO[str] | None = None
    unexpected: list[str] = field(default_factory=list)
    settled_ok: int = 0
    outcomes_resolved: int = 0  # unanswered money requests whose outcome was found out after a lost connection
    store: CardStateStore = field(default_factory=CardStateStore)
    on_settled: Callable[[], None] | None = None  # each settlement answered OK, as it is (settlements per second)

    def __post_init__(self) -> None:
        index, count = self.partition
        self.by_case: dict[Case, list[DemoHolder]] = {}
        for holder in demo_population(self.persons):
            if holder.index % count == index:
                self.by_case.setdefault(holder.case, []).append(holder)
        self._locks: dict[int, defer.DeferredLock] = {}

    def holder(self, *cases: Case) -> DemoHolder:
        candidates = [h for case in cases for h in self.by_case.get(case, [])]
        if not candidates:
            raise LookupError(f"no holder of {cases} in this partition; use a larger population")
        return self.rng.choice(candidates)

    def lock(self, holder: DemoHolder) -> defer.DeferredLock:
        # One scenario at a time per holder: what a scenario expects must not depend on another's timing.
        return self._locks.setdefault(holder.index, defer.DeferredLock())

    def card(self, holder: DemoHolder, which: int = -1) -> VirtualCard:
        return VirtualCard(holder, holder.cards[which], store=self.store)

    def amount(self) -> int:
        return self.rng.randint(100, 200_000)

    def expect(self, scenario: str, step: str, response: pb.Response, *statuses: int) -> bool:
        if response.status in statuses:
            return True
        wanted = " or ".join(status_name(s) for s in statuses)
        self.unexpected.append(f"{scenario}/{step} {response.message_id}: expected {wanted}, got "
                               f"{status_name(response.status)} ({response.message_en})")
        return False

    def fail(self, scenario: str, step: str, what: str) -> None:
        self.unexpected.append(f"{scenario}/{step}: {what}")

    def outcome(self, terminal: SimTerminal, scenario: str, body: str, message_id: str, response: pb.Response | None,
                **extra: Any) -> None:
        if body == "settle" and response is not None and response.status == OK:
            self.settled_ok += 1
            if self.on_settled is not None:
                self.on_settled()
        if response is None and message_id in terminal.unanswered:
            terminal.unanswered[message_id].recorded = True
        record: dict[str, Any] = {"status": status_name(response.status) if response is not None else "NO_ANSWER"}
        if response is not None and body == "settle" and response.status == OK:
            record["settlement_id"] = response.settle.settlement_id
            record["amounts"] = split_dict(response.settle.split)
        self.write(terminal, scenario, body, message_id, {**record, **extra})

    def write(self, terminal: SimTerminal, scenario: str, body: str, message_id: str, fields: dict[str, Any]) -> None:
        if self.outcomes is not None:
            record = {"run": self.run_id, "terminal": terminal.terminal_id, "message_id": message_id,
                      "scenario": scenario, "body": body, **fields}
            self.outcomes.write(json.dumps(record) + "\n")

    def record_unanswered(self, terminal: SimTerminal) -> None:
        """Write what the terminal sent and never heard about (NO_ANSWER), before it tries to find out: should it
        never manage to, the record still says the request was sent."""
        for message_id, sent in terminal.unanswered.items():
            if not sent.recorded:
                self.outcome(terminal, sent.scenario, sent.body, message_id, None, **_what_it_names(sent))


def _what_it_names(sent: Unanswered) -> dict[str, Any]:
    """The fields the outcomes give a Revoke and a Reverse: the settlement or the request they undo."""
    if sent.body == "revoke":
        return {"revoked_settlement_id": sent.fields["settlement_id"]}
    if sent.body == "reverse":
        return {"original_message_id": sent.fields["original_message_id"]}
    return {}


async def _with_card(ctx: RunContext, terminal: SimTerminal, card: VirtualCard, scenario: str,
                     body: Callable[[], Awaitable[Any]]) -> None:
    inserted = await terminal.insert(card)
    ctx.expect(scenario, "insert", inserted, OK)
    try:
        await body()
    finally:
        if not terminal.closed:
            ctx.expect(scenario, "remove", await terminal.remove(), OK)


async def _settle(ctx: RunContext, terminal: SimTerminal, scenario: str, *statuses: int, medical_type: int = 11,
                  pin: str = "", total_fen: int | None = None, message_id: str | None = None) -> pb.Response:
    message_id = message_id or terminal.next_message_id()
    fields: dict[str, Any] = {"medical_type": medical_type, "total_fen": total_fen or ctx.amount()}
    fields.update(_pin_fields(terminal, pin))
    response = await terminal.call("settle", message_id, **fields)
    ctx.expect(scenario, "settle", response, *statuses)
    ctx.outcome(terminal, scenario, "settle", message_id, response)
    return response


def _pin_fields(terminal: SimTerminal, pin: str) -> dict[str, str]:
    """The PIN the holder gives: typed on the terminal's pad when it has one (nothing in the request), else sent."""
    if terminal.pin_pad:
        terminal.typed_pin = pin
        return {}
    return {"pin": pin} if pin else {}


# The scenarios -----------------------------------------------------------------------------------


async def in_city_outpatient(ctx: RunContext, terminal: SimTerminal) -> None:
    holder = ctx.holder(Case.NINGBO, Case.NINGBO_RETIRED_EMPLOYEE, Case.NINGBO_RETIRED_DISTRICT,
                        Case.NINGBO_REGION_CHANGED, Case.NINGBO_RESIDENT)
    async with _Locked(ctx, holder):
        async def body() -> None:
            read = await terminal.call("read_card")
            if ctx.expect("in_city_outpatient", "read_card", read, OK) and read.read_card.insured.pin_required:
                ctx.fail("in_city_outpatient", "read_card", "an in-city holder must not need a PIN")
            await _settle(ctx, terminal, "in_city_outpatient", OK)
        await _with_card(ctx, terminal, ctx.card(holder), "in_city_outpatient", body)


async def in_city_pharmacy(ctx: RunContext, terminal: SimTerminal) -> None:
    holder = ctx.holder(Case.NINGBO, Case.NINGBO_RETIRED_EMPLOYEE, Case.NINGBO_REGION_CHANGED)
    async with _Locked(ctx, holder):
        await _with_card(ctx, terminal, ctx.card(holder), "in_city_pharmacy", lambda: _settle(
            ctx, terminal, "in_city_pharmacy", OK, medical_type=41, total_fen=ctx.rng.randint(100, 50_000)))


async def zhejiang_with_pin(ctx: RunContext, terminal: SimTerminal) -> None:
    holder = ctx.holder(Case.ZHEJIANG_FILED)
    async with _Locked(ctx, holder):
        card = ctx.card(holder)

        async def body() -> None:
            # Without a PIN: nothing sent, or nothing typed on the pad (the pad cancels an empty entry).
            missing = await terminal.call("settle", medical_type=11, total_fen=ctx.amount(),
                                          **_pin_fields(terminal, ""))
            ctx.expect("zhejiang_with_pin", "settle without PIN", missing, pb.STATUS_CODE_PIN_REQUIRED)
            await _settle(ctx, terminal, "zhejiang_with_pin", OK, pin=card.state.pin)
        await _with_card(ctx, terminal, card, "zhejiang_with_pin", body)


async def wrong_pins_to_lock(ctx: RunContext, terminal: SimTerminal) -> None:
    holder = ctx.holder(Case.ZHEJIANG_PIN_CHANGED)
    async with _Locked(ctx, holder):
        card = ctx.card(holder)
        wrong = "000000" if card.state.pin != "000000" else "111111"

        async def body() -> None:
            for tries_left in (5, 4, 3, 2, 1):
                answer = await terminal.call("settle", medical_type=11, total_fen=ctx.amount(),
                                             **_pin_fields(terminal, wrong))
                if ctx.expect("wrong_pins_to_lock", "wrong PIN", answer, pb.STATUS_CODE_PIN_WRONG) and \
                        answer.pin_tries_left != tries_left:
                    ctx.fail("wrong_pins_to_lock", "wrong PIN", f"{answer.pin_tries_left} tries left, not {tries_left}")
            locked = await terminal.call("settle", medical_type=11, total_fen=ctx.amount(),
                                         **_pin_fields(terminal, wrong))
            ctx.expect("wrong_pins_to_lock", "sixth wrong PIN", locked, pb.STATUS_CODE_PIN_LOCKED)
            still = await terminal.call("settle", medical_type=11, total_fen=ctx.amount(),
                                        **_pin_fields(terminal, card.state.pin))
            ctx.expect("wrong_pins_to_lock", "right PIN on a locked card", still, pb.STATUS_CODE_PIN_LOCKED)
        try:
            await _with_card(ctx, terminal, card, "wrong_pins_to_lock", body)
        finally:
            card.state.tries_left = 6  # the holder went to a card agency (gateway card reset-pin)


def _refused(scenario: str, cases: tuple[Case, ...], status: int, which: int = -1, medical_type: int = 11,
             pin: str = "") -> Scenario:
    async def run(ctx: RunContext, terminal: SimTerminal) -> None:
        holder = ctx.holder(*cases)
        async with _Locked(ctx, holder):
            await _with_card(ctx, terminal, ctx.card(holder, which), scenario, lambda: _settle(
                ctx, terminal, scenario, status, medical_type=medical_type, pin=pin))
    run.__name__ = scenario
    return run


lost_card = _refused("lost_card", (Case.LOST,), pb.STATUS_CODE_CARD_LOST)
replaced_card = _refused("replaced_card", (Case.REPLACED,), pb.STATUS_CODE_CARD_REPLACED, which=0)
special_disease_elsewhere = _refused("special_disease_elsewhere", (Case.ZHEJIANG_FILED,),
                                     pb.STATUS_CODE_SPECIAL_DISEASE_NOT_SUPPORTED, medical_type=14, pin="000000")
outside_province = _refused("outside_province", (Case.OUTSIDE_PROVINCE,), pb.STATUS_CODE_OUTSIDE_PROVINCE)
unfiled_elsewhere = _refused("unfiled_elsewhere", (Case.ZHEJIANG_UNFILED,), pb.STATUS_CODE_FILING_REQUIRED,
                             pin="000000")


async def old_ic_after_new(ctx: RunContext, terminal: SimTerminal) -> None:
    holder = ctx.holder(Case.OLD_IC_HOLDER)
    async with _Locked(ctx, holder):
        await _with_card(ctx, terminal, ctx.card(holder, -1), "old_ic_after_new",
                         lambda: _settle(ctx, terminal, "old_ic_after_new", OK))
        await _with_card(ctx, terminal, ctx.card(holder, 0), "old_ic_after_new",
                         lambda: _settle(ctx, terminal, "old_ic_after_new", pb.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED))


async def pre_settle_then_settle(ctx: RunContext, terminal: SimTerminal) -> None:
    holder = ctx.holder(Case.NINGBO, Case.NINGBO_RETIRED_EMPLOYEE)
    async with _Locked(ctx, holder):
        async def body() -> None:
            total = ctx.amount()
            pre = await terminal.call("pre_settle", medical_type=11, total_fen=total)
            ctx.expect("pre_settle_then_settle", "pre_settle", pre, OK)
            settled = await _settle(ctx, terminal, "pre_settle_then_settle", OK, total_fen=total)
            if pre.status == OK and settled.status == OK and pre.pre_settle.split != settled.settle.split:
                ctx.fail("pre_settle_then_settle", "settle", "the settlement differs from its pre-settlement")
        await _with_card(ctx, terminal, ctx.card(holder), "pre_settle_then_settle", body)


async def revoke(ctx: RunContext, terminal: SimTerminal) -> None:
    holder = ctx.holder(Case.NINGBO, Case.NINGBO_REGION_CHANGED)
    async with _Locked(ctx, holder):
        async def body() -> None:
            settled = await _settle(ctx, terminal, "revoke", OK)
            if settled.status != OK:
                return
            message_id = terminal.next_message_id()
            revoked = await terminal.call("revoke", message_id, settlement_id=settled.settle.settlement_id)
            ctx.expect("revoke", "revoke", revoked, OK)
            if revoked.status == OK and revoked.revoke.refunded != settled.settle.split:
                ctx.fail("revoke", "revoke", "the refund differs from the settlement")
            ctx.outcome(terminal, "revoke", "revoke", message_id, revoked,
                        revoked_settlement_id=settled.settle.settlement_id)
        await _with_card(ctx, terminal, ctx.card(holder), "revoke", body)


async def timeout_then_retry(ctx: RunContext, terminal: SimTerminal) -> None:
    """The terminal gives up waiting, then sends the same message id again: one settlement, never two."""
    holder = ctx.holder(Case.NINGBO, Case.NINGBO_RETIRED_EMPLOYEE)
    async with _Locked(ctx, holder):
        async def body() -> None:
            message_id = terminal.next_message_id()
            total = ctx.amount()
            terminal.send_and_forget("settle", message_id, medical_type=11, total_fen=total)
            ctx.outcome(terminal, "timeout_then_retry", "settle", message_id, None)
            await task.deferLater(_reactor(), ctx.rng.uniform(0.0, 0.02), lambda: None)
            await _settle(ctx, terminal, "timeout_then_retry", OK, total_fen=total, message_id=message_id)
        await _with_card(ctx, terminal, ctx.card(holder), "timeout_then_retry", body)


async def timeout_then_reverse(ctx: RunContext, terminal: SimTerminal) -> None:
    """The terminal gives up waiting and reverses: whatever happened, the money does not move."""
    holder = ctx.holder(Case.NINGBO, Case.NINGBO_RETIRED_EMPLOYEE)
    async with _Locked(ctx, holder):
        async def body() -> None:
            original = terminal.next_message_id()
            terminal.send_and_forget("settle", original, medical_type=11, total_fen=ctx.amount())
            ctx.outcome(terminal, "timeout_then_reverse", "settle", original, None)
            await task.deferLater(_reactor(), ctx.rng.uniform(0.0, 0.05), lambda: None)
            message_id = terminal.next_message_id()
            reversed_ = await terminal.call("reverse", message_id, original_message_id=original)
            if ctx.expect("timeout_then_reverse", "reverse", reversed_, OK) and reversed_.reverse.outcome not in (
                    pb.REVERSE_OUTCOME_REVERSED, pb.REVERSE_OUTCOME_NEVER_ARRIVED):
                ctx.fail("timeout_then_reverse", "reverse", f"outcome {reversed_.reverse.outcome}")
            ctx.outcome(terminal, "timeout_then_reverse", "reverse", message_id, reversed_,
                        original_message_id=original,
                        reverse_outcome=str(pb.ReverseOutcome.Name(reversed_.reverse.outcome)))
        await _with_card(ctx, terminal, ctx.card(holder), "timeout_then_reverse", body)


async def settle_card_in_reader(ctx: RunContext, terminal: SimTerminal) -> None:
    """One Settle, the card staying in the reader: inserted and read at the terminal's first scenario only.
    The settlement exchange alone, which the benchmark sets beside the whole counter flow (mix `settle`)."""
    if terminal.card is None:
        # In-city holders need no PIN and can settle at two counters at once: no holder lock is needed.
        card = ctx.card(ctx.holder(Case.NINGBO, Case.NINGBO_RETIRED_EMPLOYEE, Case.NINGBO_RESIDENT))
        ctx.expect("settle_card_in_reader", "insert", await terminal.insert(card), OK)
        ctx.expect("settle_card_in_reader", "read_card", await terminal.call("read_card"), OK)
    await _settle(ctx, terminal, "settle_card_in_reader", OK)


async def heartbeat(ctx: RunContext, terminal: SimTerminal) -> None:
    ctx.expect("heartbeat", "heartbeat", await terminal.call("heartbeat"), OK)


# After a lost connection -------------------------------------------------------------------------


async def resolve_unanswered(ctx: RunContext, terminal: SimTerminal) -> None:
    """Find out what became of each money request the terminal sent and got no answer to, the way
    docs/protocol.md 2.6 (rule 1) says, and record it; on a signed-in connection (counted in
    ctx.outcomes_resolved, also when the connection is lost again half way).

    A Reverse or a Revoke is sent again under its own message id: if it was committed the gateway answers
    what it recorded, otherwise it is done now. A Settle is looked up with QueryTransaction: committed, its
    amounts are what the terminal learns (the clerk prints the receipt); otherwise it is reversed, which ends it
    for good even if it were still on its way (the visit is abandoned)."""
    unknown = set(terminal.unanswered)
    try:
        for body in ("reverse", "revoke", "settle"):  # an answered Reverse settles its original too
            for message_id, sent in list(terminal.unanswered.items()):
                if sent.body != body or message_id not in terminal.unanswered:
                    continue
                if body == "settle":
                    await _resolve_settle(ctx, terminal, message_id, sent)
                    continue
                answer = await terminal.call(body, message_id, **sent.fields)
                ctx.expect(sent.scenario, f"{body} sent again after a lost connection", answer, OK)
                extra = _what_it_names(sent)
                if body == "reverse":
                    extra["reverse_outcome"] = pb.ReverseOutcome.Name(answer.reverse.outcome)
                ctx.outcome(terminal, sent.scenario, body, message_id, answer, learned_by=f"{body} again", **extra)
    finally:
        ctx.outcomes_resolved += len(unknown - set(terminal.unanswered))


async def _resolve_settle(ctx: RunContext, terminal: SimTerminal, message_id: str, sent: Unanswered) -> None:
    query = await terminal.call("query_transaction", message_id=message_id)
    found = query.query_transaction
    if query.status == OK and found.state == pb.TRANSACTION_STATE_SETTLED:
        terminal.unanswered.pop(message_id, None)
        ctx.write(terminal, sent.scenario, "settle", message_id, {
            "status": status_name(OK), "settlement_id": found.settlement_id, "amounts": split_dict(found.split),
            "learned_by": "query_transaction"})
        return
    ctx.expect(sent.scenario, "query_transaction after a lost connection", query, OK,
               pb.STATUS_CODE_ORIGINAL_NOT_FOUND)
    reverse_id = terminal.next_message_id()
    reversed_ = await terminal.call("reverse", reverse_id, original_message_id=message_id)
    ctx.expect(sent.scenario, "reverse after a lost connection", reversed_, OK)
    ctx.outcome(terminal, sent.scenario, "reverse", reverse_id, reversed_, original_message_id=message_id,
                reverse_outcome=pb.ReverseOutcome.Name(reversed_.reverse.outcome), learned_by="reverse")


class _Locked:
    def __init__(self, ctx: RunContext, holder: DemoHolder) -> None:
        self._lock = ctx.lock(holder)

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# Mixes: scenario name -> (weight, the institution its terminal belongs to) ------------------------

SCENARIOS: dict[str, tuple[Scenario, str]] = {
    "in_city_outpatient": (in_city_outpatient, HOSPITAL),
    "in_city_pharmacy": (in_city_pharmacy, PHARMACY),
    "zhejiang_with_pin": (zhejiang_with_pin, HOSPITAL),
    "wrong_pins_to_lock": (wrong_pins_to_lock, HOSPITAL),
    "lost_card": (lost_card, HOSPITAL),
    "replaced_card": (replaced_card, HOSPITAL),
    "old_ic_after_new": (old_ic_after_new, HOSPITAL),
    "special_disease_elsewhere": (special_disease_elsewhere, HOSPITAL),
    "outside_province": (outside_province, HOSPITAL),
    "unfiled_elsewhere": (unfiled_elsewhere, HOSPITAL),
    "pre_settle_then_settle": (pre_settle_then_settle, HOSPITAL),
    "revoke": (revoke, HOSPITAL),
    "timeout_then_retry": (timeout_then_retry, HOSPITAL),
    "timeout_then_reverse": (timeout_then_reverse, HOSPITAL),
    "heartbeat": (heartbeat, HOSPITAL),
    "settle_card_in_reader": (settle_card_in_reader, HOSPITAL),
}

# The share of simulated terminals whose reader has a PIN pad (SignIn.pin_pad), in every mix: the PIN scenarios
# run both ways.
PIN_PAD_PERCENT = 30

MIXES: dict[str, dict[str, int]] = {
    "default": {
        "in_city_outpatient": 30, "in_city_pharmacy": 15, "zhejiang_with_pin": 10, "wrong_pins_to_lock": 2,
        "lost_card": 3, "replaced_card": 3, "old_ic_after_new": 3, "special_disease_elsewhere": 3,
        "outside_province": 3, "unfiled_elsewhere": 3, "pre_settle_then_settle": 10, "revoke": 7,
        "timeout_then_retry": 4, "timeout_then_reverse": 4,
    },
    "heartbeat": {"heartbeat": 1},
    "settle": {"in_city_outpatient": 1},
    "settle_only": {"settle_card_in_reader": 1},
}


def load_mix(name_or_file: str) -> dict[str, int]:
    """A built-in mix by name, or a JSON file {"scenario": weight, ...}."""
    if name_or_file in MIXES:
        return MIXES[name_or_file]
    with open(name_or_file, encoding="utf-8") as handle:
        mix = json.load(handle)
    unknown = sorted(set(mix) - set(SCENARIOS))
    if unknown or not mix or not all(isinstance(w, int) and w >= 0 for w in mix.values()):
        raise ValueError(f"a mix maps scenario names to whole weights; unknown: {unknown}; known: {sorted(SCENARIOS)}")
    return {name: int(weight) for name, weight in mix.items()}
