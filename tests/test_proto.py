"""The wire contract itself: buf's style rules, and generated code that matches proto/ and its runtime."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from google.protobuf.descriptor import Descriptor, EnumDescriptor

from gateway.protocol.messages import REQUEST_BODIES, pb

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto/ningbo/gateway/v1/gateway.proto"
GENERATED = ROOT / "gateway/protocol/generated/ningbo/gateway/v1/gateway_pb2.py"
FILE = pb.DESCRIPTOR


def upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def all_messages() -> list[Descriptor]:
    found: list[Descriptor] = []

    def walk(descriptor: Descriptor) -> None:
        found.append(descriptor)
        for nested in descriptor.nested_types:
            walk(nested)

    for message in FILE.message_types_by_name.values():
        walk(message)
    return found


def all_enums() -> list[EnumDescriptor]:
    return list(FILE.enum_types_by_name.values()) + [e for m in all_messages() for e in m.enum_types]


def test_the_package_is_versioned() -> None:
    assert FILE.package == "ningbo.gateway.v1"
    assert FILE.name == "ningbo/gateway/v1/gateway.proto"


def test_enums_start_with_unspecified_and_prefix_their_values() -> None:
    for enum in all_enums():
        prefix = upper_snake(enum.name) + "_"
        assert enum.values[0].number == 0 and enum.values[0].name == prefix + "UNSPECIFIED", enum.name
        for value in enum.values:
            assert value.name.startswith(prefix), value.name


def test_names_follow_buf_style() -> None:
    for message in all_messages():
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", message.name), message.name
        for field in message.fields:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", field.name), f"{message.name}.{field.name}"


def test_every_message_the_issue_names_is_defined() -> None:
    names = set(FILE.message_types_by_name)
    assert {"Request", "Response", "SignIn", "SignOut", "Heartbeat", "ReadCard", "QueryBalance", "PreSettle",
            "Settle", "Revoke", "Reverse", "QueryTransaction", "CardEvent", "ApduScript", "ApduResult"} <= names
    assert set(REQUEST_BODIES) == {"sign_in", "sign_out", "heartbeat", "read_card", "query_balance", "pre_settle",
                                   "settle", "revoke", "reverse", "query_transaction", "card_event", "apdu_result"}


def test_the_national_msgid_form_fits_a_message_id() -> None:
    national = "H33020300001" + "20261124093015" + "0001"
    assert len(national) == 30
    request = pb.Request(terminal_id="T", message_id=national)
    assert pb.Request.FromString(request.SerializeToString()).message_id == national


def test_money_fields_are_int64_fen() -> None:
    for message in all_messages():
        for field in message.fields:
            if field.name.endswith("_fen"):
                assert field.type == field.TYPE_INT64, f"{message.name}.{field.name}"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    """Fails when proto/ changed and `make proto` was not run."""
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}", str(PROTO)],
        check=True,
    )
    regenerated = tmp_path / "ningbo/gateway/v1/gateway_pb2.py"
    assert regenerated.read_text() == GENERATED.read_text(), "generated code is stale: run `make proto`"


def test_the_runtime_floor_matches_the_pinned_generator() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = pyproject["project"]["optional-dependencies"]["dev"]
    [pin] = [d for d in dev if d.startswith("grpcio-tools")]
    assert pin == f"grpcio-tools=={metadata.version('grpcio-tools')}", "grpcio-tools must be pinned exactly"
    generated_with = re.search(r"Protobuf Python Version: (\S+)", GENERATED.read_text())
    assert generated_with is not None
    [runtime] = [d for d in pyproject["project"]["dependencies"] if d.startswith("protobuf")]
    assert f">={generated_with.group(1)}" in runtime, (runtime, generated_with.group(1))
