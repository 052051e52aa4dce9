"""`gateway pki` as an operator uses it: a CA, the gateway's and the terminals' certificates, revocation, the list."""

from __future__ import annotations

import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from gateway.cli.main import main
from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION, DEMO_INSTITUTIONS, demo_terminal_id
from gateway.pki.authority import issue_terminal, list_certificates, read_crl
from gateway.pki.layout import PkiLayout
from gateway.pki.names import terminal_id_of

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = "H33020300001-01"


def pki(capsys: pytest.CaptureFixture[str], directory: Path, *words: str) -> tuple[int, str, str]:
    code = main(["pki", *words, "--dir", str(directory)])
    out, err = capsys.readouterr()
    assert "PRIVATE KEY" not in out + err  # a key is never printed
    return code, out, err


@pytest.fixture
def layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> PkiLayout:
    made = PkiLayout(tmp_path / "pki")
    assert pki(capsys, made.root, "init-ca")[0] == 0
    assert pki(capsys, made.root, "issue-server", "localhost", "127.0.0.1", "gateway.example.org")[0] == 0
    return made


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_ca_writes_its_key_0600_and_an_empty_crl_and_never_replaces_a_ca(
    layout: PkiLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mode(layout.ca_key) == 0o600 and mode(layout.server_key) == 0o600
    ca = x509.load_pem_x509_certificate(layout.ca_certificate.read_bytes())
    assert len(read_crl(layout.crl, ca)) == 0
    before = layout.ca_key.read_bytes()
    code, _, err = pki(capsys, layout.root, "init-ca")
    assert code == 1 and "already holds a CA" in err
    assert layout.ca_key.read_bytes() == before


def test_the_server_certificate_names_every_host(layout: PkiLayout) -> None:
    certificate = x509.load_pem_x509_certificate(layout.server_certificate.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "gateway.example.org"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_issue_terminal_names_the_terminal_in_the_subject_cn(layout: PkiLayout,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = pki(capsys, layout.root, "issue-terminal", TERMINAL)
    assert code == 0 and "1 terminal certificate(s) issued" in out
    certificate = x509.load_pem_x509_certificate(layout.terminal_certificate(TERMINAL).read_bytes())
    assert terminal_id_of(certificate) == TERMINAL
    assert mode(layout.terminal_key(TERMINAL)) == 0o600


@pytest.mark.parametrize(
    ("words", "code", "said"),
    [
        (["issue-terminal", TERMINAL], 1, "already has a certificate"),
        (["issue-terminal", "../escape"], 1, "must be 1 to 32 letters"),
        (["issue-terminal"], 2, "needs TERMINAL_ID... or --demo"),
        (["issue-server", "not a host!"], 1, "neither an IP address nor a DNS name"),
        (["issue-server", "localhost"], 1, "pass --replace"),
        (["revoke", "H99999999999-01"], 1, "no certificate issued here"),
        (["issue-terminal", "H33020300001-02", "--days", "0"], 1, "--days must be at least 1"),
    ],
)
def test_what_cannot_be_done_is_refused_and_changes_nothing(
    layout: PkiLayout, capsys: pytest.CaptureFixture[str], words: list[str], code: int, said: str
) -> None:
    assert pki(capsys, layout.root, "issue-terminal", TERMINAL)[0] == 0
    before = sorted(p.name for p in layout.root.rglob("*"))
    got, _, err = pki(capsys, layout.root, *words)
    assert (got, said in err) == (code, True), err
    assert sorted(p.name for p in layout.root.rglob("*")) == before


def test_demo_terminals_skip_existing_and_replace(layout: PkiLayout, capsys: pytest.CaptureFixture[str]) -> None:
    expected = len(DEMO_INSTITUTIONS) * DEFAULT_TERMINALS_PER_INSTITUTION
    code, out, _ = pki(capsys, layout.root, "issue-terminal", "--demo")
    assert code == 0 and f"{expected} terminal certificate(s) issued" in out
    first = layout.terminal_certificate(TERMINAL).read_bytes()
    code, out, _ = pki(capsys, layout.root, "issue-terminal", "--demo", "--skip-existing")
    assert code == 0 and "0 terminal certificate(s) issued" in out and f"{expected} terminal(s) already had" in out
    assert layout.terminal_certificate(TERMINAL).read_bytes() == first
    assert pki(capsys, layout.root, "issue-terminal", TERMINAL, "--replace")[0] == 0
    assert layout.terminal_certificate(TERMINAL).read_bytes() != first
    # Both stay listed (the old one is valid until revoked): revoking the terminal revokes both.
    code, out, _ = pki(capsys, layout.root, "revoke", TERMINAL)
    assert code == 0 and out.count(f"revoked terminal {TERMINAL}") == 2


def test_revoke_by_terminal_or_serial_and_the_list_says_so(layout: PkiLayout,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    for terminal_id in (TERMINAL, "H33020300001-02", "H33020300001-03"):
        assert pki(capsys, layout.root, "issue-terminal", terminal_id)[0] == 0
    issue_terminal(layout, "H33020300001-04", days=1, now=datetime.now(UTC) - timedelta(days=10))
    serial = next(c.serial for c in list_certificates(layout) if c.name == "H33020300001-02")

    assert pki(capsys, layout.root, "revoke", TERMINAL)[0] == 0
    code, out, _ = pki(capsys, layout.root, "revoke", f"0x{serial.lower()}")
    assert code == 0 and "H33020300001-02" in out
    code, out, _ = pki(capsys, layout.root, "revoke", TERMINAL)
    assert code == 0 and "nothing to do" in out

    code, out, _ = pki(capsys, layout.root, "list")
    assert code == 0
    assert _statuses(out) == {"ca": "valid", "localhost": "valid", TERMINAL: "revoked", "H33020300001-02": "revoked",
                              "H33020300001-03": "valid", "H33020300001-04": "expired"}
    ca = x509.load_pem_x509_certificate(layout.ca_certificate.read_bytes())
    assert len(read_crl(layout.crl, ca)) == 2


def _statuses(listing: str) -> dict[str, str]:
    """name (the CA as "ca") -> status, from `gateway pki list`'s table."""
    rows = {}
    for line in listing.splitlines()[1:]:
        _, kind, rest = line.split(maxsplit=2)
        status = line.rsplit("  ", 1)[-1].split()[0]
        rows["ca" if kind == "ca" else rest.split()[0]] = status
    return rows


def test_make_pki_creates_the_demo_pki_once(tmp_path: Path) -> None:
    directory = tmp_path / "var-pki"

    def make_pki() -> subprocess.CompletedProcess[str]:
        # -o setup: the virtualenv is the one running this test.
        return subprocess.run(["make", "-s", "-o", "setup", "pki", f"PKI_DIR={directory}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    first = make_pki()
    assert first.returncode == 0, first.stderr
    layout = PkiLayout(directory)
    demo = [demo_terminal_id(code, n) for code, *_ in DEMO_INSTITUTIONS
            for n in range(1, DEFAULT_TERMINALS_PER_INSTITUTION + 1)]
    made = [layout.ca_certificate, layout.server_certificate, layout.server_key,
            *(path for t in demo for path in (layout.terminal_certificate(t), layout.terminal_key(t)))]
    assert all(path.exists() for path in made)
    contents = {path: path.read_bytes() for path in made}
    second = make_pki()
    assert second.returncode == 0, second.stderr
    assert f"{len(demo)} terminal(s) already had one" in second.stdout
    assert {path: path.read_bytes() for path in made} == contents
