"""Download receipts (注明来源和获取日期, 第三十五条): the node signs what a download was, and
anyone checks it offline with the province root certificate alone; each kind of tampering is
refused naming the check that caught it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import Role, make_identity
from node.codes import make_credit_code
from node.config import load_config
from node.opendata import (
    MAX_RECEIPT_BYTES,
    Receipt,
    ReceiptError,
    check_receipt,
    digest_of,
    make_receipt,
    sha256_of,
)
from node.pki import load_certs, load_chain_pem, load_private_key, provision_province
from node.pki._ca import create_intermediate, create_root_ca, issue_leaf
from node.pki._files import certs_pem
from node.times import CST
from node.tlog import EcdsaSigner, sign_note
from tests.support.cli import govnode

TD = "fujian.gov.cn"
PROVINCE_NODE = "spiffe://350000.fujian.gov.cn/node"
#: A moment inside the test certificates' validity, with microseconds a receipt drops. They are
#: issued in the fixture, which may run many minutes after this module is imported (a busy
#: suite), and are valid for a year: a day ahead is safely inside.
OBTAINED = dt.datetime.now(dt.UTC).replace(microsecond=123456) + dt.timedelta(days=1)
DATA = "统一社会信用代码,名称\n91350100M000100Y43,某某科技有限公司\n".encode()


@dataclass(frozen=True)
class Node:
    """A provisioned province node's key and chain (nothing started) and its root."""

    base: Path
    root: x509.Certificate
    root_path: Path
    key: ec.EllipticCurvePrivateKey
    chain_pem: str


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    base = tmp_path_factory.mktemp("province")
    made = provision_province(
        base,
        region="350000",
        name="福建省",
        listen="127.0.0.1:0",
        trust_domain=TD,
        hosts=["127.0.0.1"],
    )
    cfg = load_config(made.config_path)
    root_path = cfg.path(cfg.tls.root)
    root = load_certs(root_path)[0]
    return Node(
        base,
        root,
        root_path,
        load_private_key(cfg.path(cfg.tls.key)),
        load_chain_pem(cfg.path(cfg.tls.cert), root),
    )


def a_receipt(**changes: object) -> Receipt:
    digest = digest_of(DATA)
    fields: dict[str, object] = {
        "dataset": "https://data.fujian.gov.cn/dataset/350000-1-000001",
        "resource_code": "350000-1-000001",
        "resource_name": "企业登记信息",
        "provider_code": make_credit_code("11350000003591002"),
        "provider_name": "福建省市场监督管理局",
        "authority_region": "350000",
        "authority_name": "福建省大数据管理局",
        "version": 3,
        "format": "csv",
        "sha256": digest.sha256,
        "size": digest.size,
        "obtained_at": OBTAINED,
        "recipient": "key:ak_7f3e21",
        "node": PROVINCE_NODE,
    }
    fields.update(changes)
    return Receipt(**fields)  # type: ignore[arg-type]


def refused(check: str, data: bytes, node: Node, **kwargs: object) -> str:
    with pytest.raises(ReceiptError) as caught:
        check_receipt(data, node.root, TD, **kwargs)  # type: ignore[arg-type]
    assert caught.value.check == check, str(caught.value)
    return str(caught.value)


def edit_note(data: bytes, old: str, new: str) -> bytes:
    document = json.loads(data)
    document["note"] = [line.replace(old, new) for line in document["note"]]
    return json.dumps(document, ensure_ascii=False, indent=2).encode()


def test_a_receipt_round_trips_and_reads_as_text(node: Node) -> None:
    receipt = a_receipt()
    data = make_receipt(receipt, node.key, node.chain_pem)
    assert check_receipt(data, node.root, TD, file_bytes=DATA) == receipt
    assert receipt.obtained_at == OBTAINED.replace(microsecond=0)
    document = json.loads(data)
    assert document["format"] == "govnode download receipt v1"
    # A person reading the file sees the signed fields, one per line, in a fixed order.
    assert document["note"][:4] == [
        "govnode download receipt v1",
        "dataset https://data.fujian.gov.cn/dataset/350000-1-000001",
        "resource 350000-1-000001",
        "name 企业登记信息",
    ]
    assert f"obtained {OBTAINED:%Y-%m-%dT%H:%M:%S}Z" in document["note"]
    assert document["note"][-1].startswith("— 350000.fujian.gov.cn/node ")
    assert "企业登记信息" in data.decode()  # UTF-8, not \u escapes


def test_a_changed_field_is_refused_by_the_signature(node: Node) -> None:
    data = make_receipt(a_receipt(), node.key, node.chain_pem)
    for old, new in [
        ("version 3", "version 4"),
        (f"obtained {OBTAINED:%Y}", f"obtained {OBTAINED.year - 1}"),
        ("recipient key:ak_7f3e21", "recipient key:ak_000000"),
    ]:
        message = refused("signature", edit_note(data, old, new), node)
        assert "does not verify" in message


def test_a_different_file_is_refused_by_its_digest(node: Node, tmp_path: Path) -> None:
    data = make_receipt(a_receipt(), node.key, node.chain_pem)
    same_size = DATA.replace(b"Y43", b"Y44")
    message = refused("data", data, node, file_bytes=same_size)
    assert "SHA-256" in message and "not the file the node served" in message
    assert "bytes; the receipt is for" in refused("data", data, node, file_bytes=DATA + b"x")
    # The streamed digest of a file on disk checks the same way.
    path = tmp_path / "download.csv"
    path.write_bytes(DATA)
    assert check_receipt(data, node.root, TD, file_digest=sha256_of(path)).size == len(DATA)
    path.write_bytes(same_size)
    refused("data", data, node, file_digest=sha256_of(path))


def test_a_chain_from_another_root_is_refused(node: Node) -> None:
    other_root = create_root_ca("350000", "福建省", TD)
    ca = create_intermediate(other_root, "350000", "福建省", TD)
    impostor = issue_leaf(ca, make_identity("350000", TD, Role.NODE), common_name="impostor")
    data = make_receipt(a_receipt(), impostor.key, certs_pem(impostor.cert, ca.cert).decode())
    message = refused("chain", data, node)
    assert "does not lead to the province root" in message


def test_a_receipt_signed_by_another_key_for_the_same_chain_is_refused(node: Node) -> None:
    genuine = make_receipt(a_receipt(), node.key, node.chain_pem)
    other = issue_leaf(
        create_intermediate(create_root_ca("350000", "福建省", TD), "350000", "福建省", TD),
        make_identity("350000", TD, Role.NODE),
        common_name="other",
    )
    forged = make_receipt(a_receipt(), other.key, certs_pem(other.cert).decode())
    document = json.loads(forged)
    document["chain_pem"] = json.loads(genuine)["chain_pem"]
    message = refused("signature", json.dumps(document).encode(), node)
    assert "no signature by a known key" in message


def test_a_truncated_or_malformed_file_is_refused_by_its_format(node: Node) -> None:
    data = make_receipt(a_receipt(), node.key, node.chain_pem)
    assert "not JSON" in refused("format", data[: len(data) // 2], node)
    assert "format" in refused("format", b'{"format": "something else"}', node)
    document = json.loads(data)
    document["note"] = "one string"
    refused("format", json.dumps(document).encode(), node)
    # Lines cut off the note: the signature line is gone.
    document = json.loads(data)
    document["note"] = document["note"][:5]
    refused("signature", json.dumps(document).encode(), node)


def test_an_oversized_file_is_refused_unread(node: Node) -> None:
    data = make_receipt(a_receipt(), node.key, node.chain_pem)
    padded = data.rstrip() + b" " * MAX_RECEIPT_BYTES
    message = refused("size", padded, node)
    assert f"at most {MAX_RECEIPT_BYTES}" in message and len(message) < 200


def test_fields_are_bounded_and_checked(node: Node) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"recipient": "x" * 129}, "recipient is 129 characters"),
        ({"recipient": "a\nb"}, "recipient"),
        ({"provider_code": "91350100M000100Y44"}, "provider_code"),
        ({"authority_region": "350102"}, "county-level"),
        ({"version": 0}, "version 0"),
        ({"sha256": "AB" * 32}, "sha256"),
        ({"format": "CSV file"}, "format"),
        ({"node": "spiffe://350000.fujian.gov.cn/authority"}, "not a node's identity"),
        ({"obtained_at": dt.datetime(2026, 3, 1)}, "time zone"),
    ]
    for changes, needle in cases:
        with pytest.raises(ReceiptError, match=needle) as caught:
            a_receipt(**changes)
        assert caught.value.check == "fields"
        assert len(str(caught.value)) < 300


def test_the_node_refuses_to_sign_for_another_node_or_with_another_key(node: Node) -> None:
    with pytest.raises(ReceiptError, match="the chain is") as caught:
        make_receipt(a_receipt(node="spiffe://350100.fujian.gov.cn/node"), node.key, node.chain_pem)
    assert caught.value.check == "signing"
    with pytest.raises(ReceiptError, match="not the one certified"):
        make_receipt(a_receipt(), ec.generate_private_key(ec.SECP256R1()), node.chain_pem)


def test_a_receipt_naming_another_node_is_refused(node: Node) -> None:
    # Signed by the province node's key, but stating that a city node served the file.
    text = a_receipt(node="spiffe://350100.fujian.gov.cn/node").text()
    note = sign_note(text, EcdsaSigner("350000.fujian.gov.cn/node", node.key))
    document = {
        "format": "govnode download receipt v1",
        "note": note.decode().removesuffix("\n").split("\n"),
        "chain_pem": node.chain_pem,
    }
    message = refused("node", json.dumps(document).encode(), node)
    assert "350100" in message and PROVINCE_NODE in message


def test_a_receipt_dated_outside_the_certificate_is_refused(node: Node) -> None:
    leaf = x509.load_pem_x509_certificates(node.chain_pem.encode())[0]
    before = leaf.not_valid_before_utc - dt.timedelta(days=1)
    data = make_receipt(a_receipt(obtained_at=before), node.key, node.chain_pem)
    assert "was not valid at" in refused("time", data, node)


def test_check_receipt_cli_on_a_good_and_a_bad_receipt(node: Node, tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.json"
    receipt.write_bytes(make_receipt(a_receipt(), node.key, node.chain_pem))
    download = tmp_path / "download.csv"
    download.write_bytes(DATA)
    good = govnode(
        "opendata", "check-receipt", receipt, "--root", node.root_path, "--data", download
    )
    assert good.returncode == 0, good.stderr
    assert "receipt verified" in good.stdout
    assert "source: https://data.fujian.gov.cn/dataset/350000-1-000001" in good.stdout
    assert "provided by 福建省市场监督管理局" in good.stdout
    assert "version: 3" in good.stdout
    shown = OBTAINED.astimezone(CST)
    assert shown.utcoffset() == dt.timedelta(hours=8)
    assert f"obtained: {shown:%Y-%m-%d %H:%M:%S} CST by key:ak_7f3e21" in good.stdout

    download.write_bytes(DATA.replace(b"Y43", b"Y44"))
    bad = govnode(
        "opendata", "check-receipt", receipt, "--root", node.root_path, "--data", download
    )
    assert bad.returncode == 1
    assert "receipt INVALID (data check)" in bad.stdout
    assert "receipt verified" not in bad.stdout

    receipt.write_bytes(edit_note(receipt.read_bytes(), "version 3", "version 4"))
    forged = govnode("opendata", "check-receipt", receipt, "--root", node.root_path)
    assert forged.returncode == 1
    assert "receipt INVALID (signature check)" in forged.stdout


def test_receipt_dataclass_is_frozen_and_compares_by_value() -> None:
    receipt = a_receipt()
    assert dataclasses.replace(receipt) == receipt
    with pytest.raises(dataclasses.FrozenInstanceError):
        receipt.version = 4  # type: ignore[misc]
