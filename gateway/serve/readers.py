"""Which reader serves which terminal, and the reader objects themselves (one per physical slot)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from gateway.config import ReaderConfig
from gateway.reader.base import CardReader, Presence, PresenceEvent
from gateway.reader.errors import ReaderUnavailable
from gateway.reader.pcsc import PcscReader, pyscard_available
from gateway.reader.relay import ApduRelay
from gateway.reader.spec import ReaderSpec
from gateway.reader.virtual import VirtualReader

# Asked on every request that touches a card: each distinct text is parsed once.
_parse_spec = functools.lru_cache(maxsize=1024)(ReaderSpec.parse)

# Called with a terminal id whose cached card data must be forgotten.
ForgetCard = Callable[[str], None]


class ReaderAssignments:
    def __init__(self, config: ReaderConfig, reactor: Any, forget_card: ForgetCard) -> None:
        self._config = config
        self._overrides = dict(config.terminals)
        self._reactor = reactor
        self._forget_card = forget_card
        self._pcsc: dict[str, PcscReader] = {}
        self._virtual: dict[str, VirtualReader] = {}
        # The card each virtual reader was made with, and how to stop listening to that reader.
        self._virtual_cards: dict[str, tuple[str | None, Callable[[], None]]] = {}
        # Which terminals each shared slot serves, so that a removal forgets the right cards.
        self._served: dict[str, set[str]] = {}

    def spec_for(self, terminal_id: str, registered: str) -> ReaderSpec:
        return _parse_spec(self._overrides.get(terminal_id, registered))

    def reader_for(self, terminal_id: str, registered: str, relay: ApduRelay, token: int) -> CardReader:
        spec = self.spec_for(terminal_id, registered)
        if spec.kind == "terminal":
            return relay.reader_for(token)
        if spec.kind == "pcsc":
            if spec.argument is None:  # ReaderSpec.parse never gives one; a spec built by hand might
                raise ReaderUnavailable(f"the reader of {terminal_id} is pcsc without a PC/SC reader name",
                                        "读卡器配置缺少PC/SC读卡器名称")
            return self._pcsc_reader(spec.argument, terminal_id)
        return self._virtual_reader(terminal_id, spec.argument)

    def _pcsc_reader(self, name: str, terminal_id: str) -> PcscReader:
        reader = self._pcsc.get(name)
        if reader is None:
            if not pyscard_available():
                raise ReaderUnavailable("this gateway has no PC/SC support (pyscard is not installed)",
                                        "网关未安装PC/SC支持")
            reader = self._pcsc[name] = PcscReader(
                name, self._reactor, transmit_timeout_s=self._config.pcsc_timeout_s,
                close_timeout_s=self._config.pcsc_close_timeout_s)
            reader.subscribe(self._slot_changed)
        self._served.setdefault(name, set()).add(terminal_id)
        return reader

    def _virtual_reader(self, terminal_id: str, card_number: str | None) -> VirtualReader:
        reader = self._virtual.get(terminal_id)
        if reader is None or self._virtual_cards[terminal_id][0] != card_number:
            # New, or the registry now names another card for this terminal.
            card = None
            if card_number is not None:
                from gateway.demo.card import card_from_population

                try:
                    card = card_from_population(card_number, self._config.virtual_persons, self._config.virtual_seed)
                except KeyError as exc:
                    raise ReaderUnavailable(f"virtual reader of {terminal_id}: {exc.args[0]}",
                                            "虚拟读卡器配置的卡不存在") from exc
            name = f"virtual-{terminal_id}"
            if reader is not None:
                self._virtual_cards[terminal_id][1]()  # the old reader's events no longer concern this terminal
                self._forget_card(terminal_id)  # what was read from the card it had
            reader = self._virtual[terminal_id] = VirtualReader(name, card)
            self._virtual_cards[terminal_id] = (card_number, reader.subscribe(self._slot_changed))
            self._served[name] = {terminal_id}
        return reader

    def virtual_reader(self, terminal_id: str) -> VirtualReader | None:
        return self._virtual.get(terminal_id)

    def _slot_changed(self, event: PresenceEvent) -> None:
        if event.presence in (Presence.REMOVED, Presence.INSERTED):
            for terminal_id in self._served.get(event.reader, ()):
                self._forget_card(terminal_id)

