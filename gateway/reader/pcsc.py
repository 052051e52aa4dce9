"""The `pcsc` backend: readers attached to the gateway host, through pcscd and pyscard.

pyscard's calls block, so each reader has its own single worker thread (calls to one card are
serialised; a slow card never holds up another reader or the reactor). Every call has a deadline:
a card that stops answering gives READER_UNAVAILABLE, never a stuck request.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gateway.reader.apdu import PinEntry
from gateway.reader.base import PIN_ENTRY_TIMEOUT_S, Presence, PresenceEvent, PresenceListener, continues_script
from gateway.reader.errors import CardProblem, CardRemoved, NoCard, ReaderUnavailable

DEFAULT_TRANSMIT_TIMEOUT_S = 10.0
# How long closing a reader waits for its worker to let go of the card; a call hung in the driver is left
# behind (its thread is a daemon) rather than hanging the gateway's shutdown.
DEFAULT_CLOSE_TIMEOUT_S = 5.0
MONITOR_POLL_MS = 500

# PC/SC return codes pyscard surfaces in its exceptions (winscard.h).
SCARD_E_NO_SMARTCARD = 0x8010000C
SCARD_W_REMOVED_CARD = 0x80100069
SCARD_W_RESET_CARD = 0x80100068
SCARD_E_UNKNOWN_READER = 0x80100009
SCARD_E_READER_UNAVAILABLE = 0x80100017
SCARD_E_NO_SERVICE = 0x8010001D
SCARD_E_NO_READERS_AVAILABLE = 0x8010002E
SCARD_E_TIMEOUT = 0x8010000A

log = Logger(namespace="gateway.reader")

# PIN_VERIFY_STRUCTURE (PC/SC part 10, 2.5.2) for our VERIFY: the PIN is BCD, placed in bytes, left justified.
_FORMAT_UNITS_BYTES = 0x80
_FORMAT_BCD = 0x01
_VALIDATE_ON_OK_KEY = 0x02
_ONE_MESSAGE = 0x01
_LANG_EN_US = 0x0409


def pin_verify_structure(entry: PinEntry, timeout_s: float = PIN_ENTRY_TIMEOUT_S) -> bytes:
    """The FEATURE_VERIFY_PIN_DIRECT input that makes the reader write the typed PIN into `entry.template`."""
    position = entry.pin_offset - 5  # counted from the first data byte, after CLA INS P1 P2 Lc
    pin_bytes = (entry.digits + 1) // 2
    if not 0 <= position < 16 or entry.pin_offset + pin_bytes > len(entry.template):
        raise ValueError("the PIN does not fit in the template's data")
    timer = min(int(timeout_s), 255)
    return b"".join((
        bytes((timer, timer)),  # bTimerOut, bTimerOut2
        bytes((_FORMAT_UNITS_BYTES | position << 3 | _FORMAT_BCD,)),  # bmFormatString
        bytes((pin_bytes,)),  # bmPINBlockString: no length field, a block of pin_bytes bytes
        b"\x00",  # bmPINLengthFormat
        bytes((entry.digits, entry.digits)),  # wPINMaxExtraDigit, little-endian: max, then min
        bytes((_VALIDATE_ON_OK_KEY, _ONE_MESSAGE)),  # bEntryValidationCondition, bNumberMessage
        _LANG_EN_US.to_bytes(2, "little"),  # wLangId
        b"\x00",  # bMsgIndex
        b"\x00\x00\x00",  # bTeoPrologue (T=1 only)
        len(entry.template).to_bytes(4, "little"),  # ulDataLength
        entry.template,
    ))


def verify_pin_direct_code(connection: Any) -> int | None:
    """The reader's control code for FEATURE_VERIFY_PIN_DIRECT (from CM_IOCTL_GET_FEATURE_REQUEST), or None when
    the reader offers no secure PIN entry; a reader whose driver refuses the request offers none."""
    from smartcard.Exceptions import SmartcardException
    from smartcard.pcsc.PCSCExceptions import BaseSCardException
    from smartcard.pcsc.PCSCPart10 import FEATURE_VERIFY_PIN_DIRECT, getFeatureRequest, hasFeature

    try:
        features = getFeatureRequest(connection)
    except (SmartcardException, BaseSCardException):
        return None
    code: int | None = hasFeature(features, FEATURE_VERIFY_PIN_DIRECT)
    return code


def pyscard_available() -> bool:
    try:
        import smartcard  # noqa: F401
    except ImportError:
        return False
    return True


def list_readers() -> list[str]:
    """Names of the PC/SC readers pcscd knows. Raises ReaderUnavailable when pcscd cannot be reached."""
    if not pyscard_available():
        raise ReaderUnavailable("pyscard is not installed (make installs it with swig and libpcsclite-dev)",
                                "未安装pyscard")
    from smartcard.Exceptions import SmartcardException
    from smartcard.pcsc.PCSCExceptions import BaseSCardException
    from smartcard.System import readers

    try:
        return [str(reader) for reader in readers()]
    except (SmartcardException, BaseSCardException) as exc:
        raise ReaderUnavailable(f"the PC/SC service is not reachable: {exc}", "PC/SC服务不可用") from exc


def _problem(exc: BaseException, reader: str) -> CardProblem:
    """Map a pyscard exception to the protocol's card problems."""
    from smartcard.Exceptions import CardConnectionException, NoCardException

    code = getattr(exc, "hresult", None)
    text = str(exc)
    if isinstance(exc, NoCardException) or code == SCARD_E_NO_SMARTCARD:
        return NoCard(f"no card in reader {reader}", f"读卡器{reader}中无卡")
    if code in (SCARD_W_REMOVED_CARD, SCARD_W_RESET_CARD) or "removed" in text.lower():
        return CardRemoved(f"the card left reader {reader}", f"卡片已从读卡器{reader}拔出")
    if code in (SCARD_E_UNKNOWN_READER, SCARD_E_READER_UNAVAILABLE, SCARD_E_NO_SERVICE,
                SCARD_E_NO_READERS_AVAILABLE) or isinstance(exc, CardConnectionException):
        return ReaderUnavailable(f"reader {reader}: {text}", f"读卡器{reader}不可用")
    return ReaderUnavailable(f"reader {reader}: {exc.__class__.__name__}: {text}", f"读卡器{reader}不可用")


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


class PcscReader:
    def __init__(self, name: str, reactor: Any, *, transmit_timeout_s: float = DEFAULT_TRANSMIT_TIMEOUT_S,
                 close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        self._name = name
        self._reactor = reactor
        self._timeout_s = transmit_timeout_s
        self._close_timeout_s = close_timeout_s
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"pcsc-{name}")
        self._pool.threadFactory = _daemon_thread  # type: ignore[assignment]
        self._pool.start()
        self._closed = False
        self._shutdown_trigger = reactor.addSystemEventTrigger("after", "shutdown", self.close)
        self._connection: Any = None
        # FEATURE_VERIFY_PIN_DIRECT's control code, or None without a pad; not asked yet while _pad_known is false.
        self._pad_code: int | None = None
        self._pad_known = False
        self._listeners: list[PresenceListener] = []
        self._monitor: _PresenceMonitor | None = None

    @property
    def name(self) -> str:
        return self._name

    # Work on the reader's own thread -------------------------------------------------------

    def _run(self, work: Callable[[], Any]) -> Deferred[Any]:
        result: Deferred[Any] = deferToThreadPool(self._reactor, self._pool, work)
        return result.addTimeout(
            self._timeout_s, self._reactor,
            onTimeoutCancel=lambda _result, timeout: _raise(ReaderUnavailable(
                f"reader {self._name} did not answer within {timeout:g} s", f"读卡器{self._name}应答超时")),
        )

    def _find_reader(self) -> Any:
        from smartcard.System import readers

        try:
            available = readers()
        except Exception as exc:
            raise _problem(exc, self._name) from exc
        for reader in available:
            if str(reader) == self._name:
                return reader
        raise ReaderUnavailable(f"reader {self._name} is not connected", f"读卡器{self._name}未连接")

    def _connect(self) -> Any:
        if self._connection is None:
            connection = self._find_reader().createConnection()
            try:
                connection.connect()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    connection.release()
                raise _problem(exc, self._name) from exc
            self._connection = connection
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # the card or reader may be gone already
                connection.disconnect()
            with contextlib.suppress(Exception):  # its PC/SC context, before pcscd can go away
                connection.release()

    def _transmit_blocking(self, commands: Sequence[bytes], stop_on_error: bool) -> list[bytes]:
        responses: list[bytes] = []
        try:
            connection = self._connect()
            for command in commands:
                data, sw1, sw2 = connection.transmit(list(command))
                response = bytes(data) + bytes((sw1, sw2))
                responses.append(response)
                if stop_on_error and not continues_script(response):
                    break
        except CardProblem:
            self._drop_connection()
            raise
        except Exception as exc:
            self._drop_connection()
            raise _problem(exc, self._name) from exc
        return responses

    def transmit(self, commands: Sequence[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]:
        batch = [bytes(c) for c in commands]
        return self._run(lambda: self._transmit_blocking(batch, stop_on_error))

    def _pad_code_blocking(self) -> int | None:
        if not self._pad_known:
            try:
                connection = self._connect()
            except CardProblem:
                self._drop_connection()
                raise
            self._pad_code = verify_pin_direct_code(connection)
            self._pad_known = True
            log.info("reader {reader}: {pad}", reader=self._name,
                     pad="secure PIN entry (FEATURE_VERIFY_PIN_DIRECT)" if self._pad_code is not None
                     else "no PIN pad; PINs are sent in VERIFY")
        return self._pad_code

    def has_pin_pad(self) -> Deferred[bool]:
        return self._run(lambda: self._pad_code_blocking() is not None)

    def _transmit_with_pin_entry_blocking(self, commands: Sequence[bytes], entry: PinEntry) -> list[bytes]:
        responses = self._transmit_blocking(commands, stop_on_error=True)
        if len(responses) < len(commands) or not continues_script(responses[-1]):
            return responses
        code = self._pad_code_blocking()
        if code is None:
            raise ReaderUnavailable(f"reader {self._name} has no PIN pad", f"读卡器{self._name}没有密码键盘")
        try:
            answer = bytes(self._connect().control(code, list(pin_verify_structure(entry))))
        except Exception as exc:
            self._drop_connection()
            raise _problem(exc, self._name) from exc
        responses.append(answer)
        return responses

    def transmit_with_pin_entry(self, commands: Sequence[bytes], entry: PinEntry) -> Deferred[list[bytes]]:
        batch = [bytes(c) for c in commands]
        result: Deferred[list[bytes]] = deferToThreadPool(
            self._reactor, self._pool, self._transmit_with_pin_entry_blocking, batch, entry)
        # The holder types on the pad: the deadline is the reader's plus the PIN entry's.
        timeout_s = self._timeout_s + PIN_ENTRY_TIMEOUT_S
        return result.addTimeout(
            timeout_s, self._reactor,
            onTimeoutCancel=lambda _result, timeout: _raise(ReaderUnavailable(
                f"reader {self._name} did not answer within {timeout:g} s", f"读卡器{self._name}应答超时")),
        )

    def _present_blocking(self) -> bool:
        try:
            self._connect()
        except NoCard:
            return False
        return True

    def card_present(self) -> Deferred[bool]:
        return self._run(self._present_blocking)

    # Insertion and removal ------------------------------------------------------------------

    def subscribe(self, listener: PresenceListener) -> Callable[[], None]:
        self._listeners.append(listener)
        if self._monitor is None:
            self._monitor = _PresenceMonitor(self._name, self._on_presence_thread)
            self._monitor.start()
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _on_presence_thread(self, event: PresenceEvent) -> None:
        self._reactor.callFromThread(self._on_presence, event)

    def _on_presence(self, event: PresenceEvent) -> None:
        if event.presence is Presence.REMOVED:
            self._pool.callInThread(self._drop_connection)
        for listener in list(self._listeners):
            listener(event)

    def close(self) -> None:
        """Stop the monitor and the worker (after it lets go of the card). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._monitor is not None:
            self._monitor.stop()
        self._pool.callInThread(self._drop_connection)
        # ThreadPool.stop joins the worker; a call hung in the driver would hold the caller (the reactor) forever.
        stopper = threading.Thread(target=self._pool.stop, daemon=True, name=f"pcsc-close-{self._name}")
        stopper.start()
        stopper.join(self._close_timeout_s)
        if stopper.is_alive():
            log.warn("reader {reader} did not let go of its card within {timeout_s} s; left behind",
                     reader=self._name, timeout_s=self._close_timeout_s)
        with contextlib.suppress(ValueError):
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)


def _raise(problem: CardProblem) -> Any:
    raise problem


class _PresenceMonitor(threading.Thread):
    """Watches one reader with SCardGetStatusChange and reports insertions and removals."""

    def __init__(self, reader: str, report: Callable[[PresenceEvent], None]) -> None:
        super().__init__(daemon=True, name=f"pcsc-monitor-{reader}")
        self._reader = reader
        self._report = report
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        from smartcard.scard import (
            SCARD_S_SUCCESS,
            SCARD_SCOPE_USER,
            SCARD_STATE_CHANGED,
            SCARD_STATE_PRESENT,
            SCARD_STATE_UNAWARE,
            SCardEstablishContext,
            SCardGetStatusChange,
            SCardReleaseContext,
        )

        result, context = SCardEstablishContext(SCARD_SCOPE_USER)
        if result != SCARD_S_SUCCESS:
            return
        try:
            state = SCARD_STATE_UNAWARE
            present: bool | None = None
            while not self._stopping.is_set():
                result, states = SCardGetStatusChange(context, MONITOR_POLL_MS, [(self._reader, state)])
                if result != SCARD_S_SUCCESS or not states:
                    if result != SCARD_E_TIMEOUT and self._stopping.wait(MONITOR_POLL_MS / 1000):
                        return
                    continue
                _name, event_state, atr = states[0]
                state = event_state & ~SCARD_STATE_CHANGED
                now_present = bool(event_state & SCARD_STATE_PRESENT)
                if present is not None and now_present != present:
                    presence = Presence.INSERTED if now_present else Presence.REMOVED
                    self._report(PresenceEvent(self._reader, presence, bytes(atr) if now_present else b""))
                present = now_present
        finally:
            SCardReleaseContext(context)
