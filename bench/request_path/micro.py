"""Per-step microbenchmarks, thread CPU time, best of rounds; run with cwd = a tree."""
import time, statistics
from datetime import datetime, UTC
from twisted.internet.defer import succeed
from gateway.demo.card import card_from_population
from gateway.reader.virtual import VirtualReader
from gateway.reader.driver import SocialSecurityCardDriver, read_script

def best(fn, n, rounds=15):
    out = []
    for _ in range(rounds):
        t = time.thread_time()
        for _ in range(n): fn()
        out.append((time.thread_time() - t) / n * 1e6)
    return statistics.median(out)

card = card_from_population()
virtual = VirtualReader("v", card)
class Canned:
    """Answers each script with the virtual card's answers recorded once: the driver's own work only."""
    name = "canned"
    def __init__(self): self.answers = {}
    def transmit(self, commands, *, stop_on_error=False):
        key = tuple(commands)
        if key not in self.answers:
            got = []
            virtual.transmit(list(commands)).addCallback(got.extend)
            self.answers[key] = got
        return succeed(list(self.answers[key]))
driver = SocialSecurityCardDriver(Canned(), today=lambda: datetime(2026, 12, 3).date())
def read():
    driver.read().addErrback(print)
print(f"card read by the driver (script, parse, validate): {best(read, 2000):.1f} us")

from gateway.ledger.outcomes import Settled, HolderBalances
from gateway.settlement.split import FundSplit
from gateway.serve.answers import answer
import dataclasses
fields = dict(total_fen=300, pooled_fund_fen=100, current_year_account_fen=100, prior_years_account_fen=0, cash_fen=100, deductible_counted_fen=0)
split = FundSplit(**fields)
bal = HolderBalances(**{f.name: 100 for f in dataclasses.fields(HolderBalances)})
settled = Settled("S2026120300000012345A", "A12345678", split, bal, datetime.now(UTC), "NB-2026")
print(f"a Settle's answer built from its outcome: {best(lambda: answer('M-1', settled), 20000):.1f} us")

# A Request's envelope checks: the session's _is_token on a message id and a terminal id.
from gateway.protocol import session as session_module
print(f"the envelope's two token checks: {best(lambda: (session_module._is_token('M-000123-abcdef-0001', 64), session_module._is_token('H33020300001-10', 32)), 50000):.2f} us")

from gateway.ops.logs import start_logging
from gateway.protocol.messages import pb
from gateway.serve.audit import audit
from gateway.protocol.responses import make_response
sink = open("/dev/null", "w")
start_logging("json", "info", sink)
req = pb.Request(message_id="M-000123-abcdef", terminal_id="H33020300001-10")
req.settle.total_fen = 12345; req.settle.medical_type = 11
resp = make_response("M-000123-abcdef", pb.STATUS_CODE_OK)
resp.settle.settlement_id = "S2026120300000012345A"; resp.settle.card_number = "A12345678"; resp.settle.split.total_fen = 12345
print(f"a Settle's audit line (JSON, to a file): {best(lambda: audit(req, 'settle', resp, terminal_id='H33020300001-10', session_id='S00000011', card_number='', retry=False), 5000):.1f} us")
