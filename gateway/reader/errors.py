"""Everything that can go wrong with a reader or a card, each with its protocol status code."""

from __future__ import annotations

from gateway.protocol.messages import pb


class CardProblem(Exception):
    """A card or reader problem with the status a terminal gets for it.

    Messages never contain a PIN; ID numbers in them are masked by the caller.
    """

    status: int = pb.STATUS_CODE_CARD_UNREADABLE

    def __init__(self, detail_en: str, detail_zh: str | None = None, *, status: int | None = None) -> None:
        super().__init__(detail_en)
        self.detail_en = detail_en
        self.detail_zh = detail_zh or detail_en
        if status is not None:
            self.status = status


class NoCard(CardProblem):
    status = pb.STATUS_CODE_CARD_NOT_PRESENT


class CardRemoved(CardProblem):
    status = pb.STATUS_CODE_CARD_REMOVED


class ReaderUnavailable(CardProblem):
    status = pb.STATUS_CODE_READER_UNAVAILABLE


class GatewayShuttingDown(CardProblem):
    """The gateway stops: a request waiting on a terminal's reader is answered so, not as a reader that failed
    (the reader is fine; the same request is retried once the gateway is back)."""

    status = pb.STATUS_CODE_GATEWAY_SHUTTING_DOWN


class CardUnreadable(CardProblem):
    status = pb.STATUS_CODE_CARD_UNREADABLE


class CardExpired(CardProblem):
    status = pb.STATUS_CODE_CARD_EXPIRED


class PinWrong(CardProblem):
    status = pb.STATUS_CODE_PIN_WRONG

    def __init__(self, tries_left: int) -> None:
        super().__init__(f"{tries_left} tries left", f"还可尝试{tries_left}次")
        self.tries_left = tries_left


class PinLocked(CardProblem):
    status = pb.STATUS_CODE_PIN_LOCKED

    def __init__(self, *, just_now: bool = False) -> None:
        """`just_now`: this VERIFY, wrong, used the card's last try (it was not blocked before)."""
        super().__init__("the card's PIN is blocked", "社保卡密码已锁定")
        self.just_now = just_now


class AgencyKeyRefused(CardProblem):
    """The card refused the agency's MAC: wrong key, or not the card the key was derived for."""

    status = pb.STATUS_CODE_CARD_UNREADABLE
