"""Signed notes (node.tlog._note) against the published vectors of golang.org/x/mod/sumdb/note
(BSD-3-Clause, The Go Authors), c2sp.org/signed-note and tlog-cosignature (CC BY 4.0 / BSD,
C2SP) and transparency-dev/formats (Apache-2.0, Google LLC and the Go Authors), and by the
refusals the spec asks for."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tlog import (
    CosignatureSigner,
    CosignatureVerifier,
    EcdsaSigner,
    EcdsaVerifier,
    Ed25519Signer,
    Ed25519Verifier,
    Note,
    NoteError,
    NoteSignature,
    add_signature_lines,
    add_signatures,
    cosignature_time,
    format_note,
    open_note,
    parse_note,
    parse_signature_lines,
    parse_vkey,
    sign_note,
    vkey,
)
from tests.tlog.logs import ecdsa_key, ed25519_key, witness

# golang.org/x/mod/sumdb/note, note_test.go (TestSign, TestOpen).
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngot"
    "pRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox3"
    "3WWd1RvMc+QQ=\n"
)

# c2sp.org/signed-note, "Verifier keys: Example".
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2O"
    "NncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

# transparency-dev/formats note/note_verifier_test.go: the Sigstore Rekor and Pixel 6 log keys
# (type 0x02, ECDSA P-256) and checkpoints they signed.
REKOR_VKEY = (
    "rekor.sigstore.dev+c0d23d6a+AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNhtmPtrWm3U1eQXBogSMdGvXw"
    "BcK5AW5i0hrZLOC96l+smGNM7nwZ4QvFK/4sueRoVj//QP22Ni4Qt9DPfkWLc="
)
REKOR_NOTE = (
    "Rekor\n798034\nf+7CoKgXKE/tNys9TTXcr/ad6U/K3xvznmzew9y6SP0=\n\n— rekor.sigstore.dev wNI9aj"
    "BEAiARInWIWyCdyG27CO6LPnPekyw20qO0YJfoaPaowGp/XgIgc+qEHS3+GKVClgqq20uDLet7MCoTURUCRdxwWBHHu"
    "fk=\n"
)
PIXEL_VKEY = (
    "pixel6_transparency_log+91c16e30+AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABN+4x0Jk1yTwvLFI9A4NDd"
    "GZcX0aiWVdWM5XJVy0M4VWD3AvyW5Q6Hs9A0mcDkpUoYgn+KKPNzFC0H3nN3q6JQ8="
)
PIXEL_NOTE = (
    "DEFAULT\n10\nbsWRucJU5xJPHb5eBdOm6+DM+VelCZBuvtI3sHERJ9Y=\n\n— pixel6_transparency_log kcFu"
    "MDBFAiEAhqMAP8P6qf6QxtUJhzMhbN+MbZ9dwfUHzGQJmffJHtoCIGD0cNe47dHWBoPwYdgBCepB06/+g5O1FmYjXl06"
    "owL4\n"
)
# note_cosigv1_test.go: a real witness's type 0x04 vkey, and a v1 cosignature's timestamp.
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
COSIG_B64 = (
    "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBY"
    "JXORmnFBOBA=="
)

CHECKPOINT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def peter_signer() -> Ed25519Signer:
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]
    return Ed25519Signer("PeterNeumann", ed25519.Ed25519PrivateKey.from_private_bytes(seed))


# -- the published vectors -------------------------------------------------------------------


def test_sumdb_sign_vector() -> None:
    signer = peter_signer()
    assert signer.key_id.hex() == "c74f20a3"
    assert sign_note(TEXT, signer) == (TEXT + "\n" + PETER_SIG).encode()


def test_sumdb_open_verifies_known_keys_and_ignores_unknown() -> None:
    peter, enoch = parse_vkey(PETER_VKEY), parse_vkey(ENOCH_VKEY)
    data = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    note, verified = open_note(data, [peter])
    assert note.text == TEXT
    assert [(s.name, s.key_id.hex()) for s in verified] == [("PeterNeumann", "c74f20a3")]
    assert len(note.signatures) == 2  # the unknown one is parsed, not trusted
    _, both = open_note(data, [peter, enoch])
    assert [s.name for s in both] == ["PeterNeumann", "EnochRoot"]
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(data, [])


def test_sumdb_open_refuses_a_failing_known_signature() -> None:
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError, match=r"PeterNeumann\+c74f20a3 does not verify"):
        open_note((TEXT + "\n" + bad).encode(), [parse_vkey(PETER_VKEY)])


def test_sumdb_duplicated_signatures_verify_once() -> None:
    data = (TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG).encode()
    _, verified = open_note(data, [parse_vkey(PETER_VKEY)])
    assert len(verified) == 1


@pytest.mark.parametrize(
    "data",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"),
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ],
    ids=["no-signatures", "blank-only", "no-final-newline", "control", "space-in-name", "stray"],
)
def test_sumdb_malformed_notes(data: str) -> None:
    with pytest.raises(NoteError):
        open_note(data.encode(), [parse_vkey(PETER_VKEY)])


def test_sumdb_vkey_manglings_all_fail() -> None:
    # As sumdb/note's TestNewVerifier: every proper substring and every one-byte change fails.
    parse_vkey(PETER_VKEY)
    b = PETER_VKEY.encode()
    for i in range(len(b)):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteError):
                    parse_vkey(b[i:j].decode())
        changed = b[:i] + bytes([b[i] + 1]) + b[i + 1 :]
        with pytest.raises(NoteError):
            parse_vkey(changed.decode())


def test_c2sp_signed_note_example() -> None:
    verifier = parse_vkey(C2SP_VKEY)
    assert isinstance(verifier, Ed25519Verifier)
    _, verified = open_note(C2SP_NOTE.encode(), [verifier])
    assert verified[0].key_id.hex() == "530d903a"


@pytest.mark.parametrize(("key", "note"), [(REKOR_VKEY, REKOR_NOTE), (PIXEL_VKEY, PIXEL_NOTE)])
def test_transparency_dev_ecdsa_vectors(key: str, note: str) -> None:
    verifier = parse_vkey(key)
    assert isinstance(verifier, EcdsaVerifier)
    # The key id of type 0x02 is SHA-256 of the DER SPKI alone, not of name || type || key.
    assert verifier.key_id == hashlib.sha256(verifier.public_bytes).digest()[:4]
    assert vkey(verifier.name, verifier.public_key, 0x02) == key
    open_note(note.encode(), [verifier])
    tampered = note.replace("\n10\n", "\n11\n").replace("\n798034\n", "\n798035\n")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(tampered.encode(), [verifier])


def test_transparency_dev_ecdsa_key_under_another_name_is_unknown() -> None:
    other = parse_vkey(REKOR_VKEY.replace("rekor.sigstore.dev", "bananas.sigstore.dev"))
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(REKOR_NOTE.encode(), [other])


def test_transparency_dev_cosignature_vkey_and_time() -> None:
    verifier = parse_vkey(REMORA_VKEY)
    assert isinstance(verifier, CosignatureVerifier)
    raw = base64.b64decode(COSIG_B64)
    assert cosignature_time(NoteSignature("w", raw[:4], raw[4:])) == 1727964367


def test_unsupported_and_mismatched_vkeys() -> None:
    static_ct = (
        "ct.googleapis.com/logs/us1/argon2024+7deb49d0+BTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABB25bK"
        "nLaZTFXOa2pgO70rjcVEMXKJkMBgFQHZ1kwFlGK9zIAx0FtC2oCfeZQe0E++VXuiYE9hFSzhRlOy92K8A="
    )
    with pytest.raises(NoteError, match="type 0x05 is not supported"):
        parse_vkey(static_ct)
    with pytest.raises(NoteError, match="computes to c0d23d6a"):
        parse_vkey(REKOR_VKEY.replace("c0d23d6a", "00000000"))
    with pytest.raises(NoteError, match="lowercase hex"):
        parse_vkey(PETER_VKEY.replace("c74f20a3", "C74F20A3"))


# -- our keys --------------------------------------------------------------------------------


def test_ecdsa_round_trip_and_vkey() -> None:
    signer = EcdsaSigner("fz.fj.gov.cn/audit", ecdsa_key("fz"))
    note = sign_note(CHECKPOINT, signer)
    verifier = parse_vkey(vkey(signer.name, ecdsa_key("fz").public_key(), 0x02))
    assert isinstance(verifier, EcdsaVerifier)
    assert verifier.key_id == signer.key_id
    open_note(note, [verifier])
    open_note(note, [signer.verifier()])


def test_ecdsa_refuses_curves_outside_the_spec() -> None:
    with pytest.raises(NoteError, match="P-256, P-384 or P-521"):
        EcdsaSigner("x", ec.generate_private_key(ec.SECP256K1()))


def test_vkey_refuses_a_key_of_the_wrong_kind() -> None:
    with pytest.raises(NoteError, match="no vkey of type 0x02"):
        vkey("x", ed25519_key("x").public_key(), 0x02)
    with pytest.raises(NoteError, match="no vkey of type 0x04"):
        vkey("x", ecdsa_key("x").public_key(), 0x04)


def test_cosignature_message_and_encoding() -> None:
    signer = witness("witness.example.com/w1", clock=1679315147)
    line = parse_signature_lines(
        add_signatures(sign_note(CHECKPOINT, signer), signer).split(b"\n\n")[1]
    )[0]
    assert cosignature_time(line) == 1679315147
    pub = ed25519_key("witness witness.example.com/w1").public_key()
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    name = b"witness.example.com/w1"
    assert line.key_id == hashlib.sha256(name + b"\n\x04" + raw).digest()[:4]
    # The spec's example message, byte for byte.
    message = (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    pub.verify(line.signature[8:], message)
    assert line.signature[:8] == (1679315147).to_bytes(8, "big")


def test_cosignature_covers_time_and_extension_lines() -> None:
    signer = witness("w1")
    verifier = CosignatureVerifier("w1", ed25519_key("witness w1").public_key())
    assert verifier.key_id == signer.key_id
    extended = CHECKPOINT + "Extendo\n"
    note = sign_note(extended, signer)
    open_note(note, [verifier])
    with pytest.raises(NoteError, match="does not verify"):
        open_note(note.replace(b"Extendo", b"Extendi"), [verifier])
    sig = parse_note(note).signatures[0]
    later = NoteSignature(sig.name, sig.key_id, (1).to_bytes(8, "big") + sig.signature[8:])
    with pytest.raises(NoteError, match="does not verify"):
        open_note(format_note(Note(extended, (later,))), [verifier])


def test_cosigner_signs_checkpoints_only_and_in_time() -> None:
    with pytest.raises(NoteError, match="checkpoints only"):
        sign_note(TEXT, witness("w1"))
    with pytest.raises(NoteError, match="time"):
        sign_note(CHECKPOINT, witness("w1", clock=0))
    with pytest.raises(NoteError, match="time"):
        sign_note(CHECKPOINT, witness("w1", clock=2**63))


def test_vkeys_round_trip_for_each_type() -> None:
    key = ed25519_key("k").public_key()
    one, four = parse_vkey(vkey("k", key, 0x01)), parse_vkey(vkey("k", key, 0x04))
    assert isinstance(one, Ed25519Verifier)
    assert isinstance(four, CosignatureVerifier)
    assert one.key_id != four.key_id  # the type byte separates them


# -- the format's refusals -------------------------------------------------------------------

SIGNED = (TEXT + "\n" + PETER_SIG).encode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xff" + SIGNED, "not UTF-8"),
        (SIGNED.replace(b"problem,", b"problem,\r"), "control character"),
        (SIGNED.replace(b"problem,", b"problem,\t"), "control character"),
        (SIGNED.replace(b"then", b"\x00then"), "control character"),
        (TEXT.encode(), "blank line"),
        (SIGNED[:-1], "ends with a newline"),
        (SIGNED.replace("— ".encode(), b"- "), "starts with"),
        (SIGNED.replace(b"PeterNeumann", b"Peter+Neumann"), "<name>"),
        (SIGNED.replace(b"PeterNeumann", "Peter\u3000Neumann".encode()), "<name>"),
        (SIGNED.replace(b"PeterNeumann ", b" "), "<name>"),
        (SIGNED.replace(b"AM=\n", b"AN=\n"), "canonical base64"),
        (SIGNED.replace(b"x08go", b"x08g!"), "canonical base64"),
        ((TEXT + "\n— PeterNeumann AAAAAA==\n").encode(), "shorter than a key id"),
    ],
)
def test_malformed_notes_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(NoteError, match=problem):
        parse_note(data)


def test_limits_on_size_and_signatures() -> None:
    sixteen = (TEXT + "\n" + PETER_SIG * 16).encode()
    assert len(parse_note(sixteen).signatures) == 16  # the spec's minimum
    with pytest.raises(NoteError, match="17 signatures, more than 16"):
        parse_note((TEXT + "\n" + PETER_SIG * 17).encode(), max_signatures=16)
    with pytest.raises(NoteError, match="65 signatures, more than 64"):
        parse_note((TEXT + "\n" + PETER_SIG * 65).encode())
    with pytest.raises(NoteError, match="more than the 100 allowed"):
        parse_note(SIGNED, max_bytes=100)


def test_error_messages_quote_little_caller_text() -> None:
    with pytest.raises(NoteError) as caught:
        parse_note((TEXT + "\n— " + "x" * 5000 + "\n").encode())
    assert len(str(caught.value)) < 120


def test_two_verifiers_claiming_one_key_are_refused() -> None:
    one, two = parse_vkey(PETER_VKEY), parse_vkey(PETER_VKEY)
    with pytest.raises(NoteError, match="share the key"):
        open_note(SIGNED, [one, two])


# -- adding signatures -----------------------------------------------------------------------


def test_add_signatures_keeps_lines_and_replaces_its_own() -> None:
    log = EcdsaSigner("example.com/behind-the-sofa", ecdsa_key("log"))
    early, late, other = witness("w1", 100), witness("w1", 200), witness("w2", 100)
    note = sign_note(CHECKPOINT, log)
    once = add_signatures(note, early, other)
    assert [s.name for s in parse_note(once).signatures] == [log.name, "w1", "w2"]
    again = add_signatures(once, late)
    sigs = parse_note(again).signatures
    assert [s.name for s in sigs] == [log.name, "w1", "w2"]
    assert cosignature_time(sigs[1]) == 200
    assert sigs[0] == parse_note(note).signatures[0]  # ECDSA is randomized: the line was kept
    _, verified = open_note(again, [late.verifier(), other.verifier(), log.verifier()])
    assert len(verified) == 3


def test_add_signature_lines_merges_a_witness_answer() -> None:
    log = EcdsaSigner("example.com/behind-the-sofa", ecdsa_key("log"))
    w1 = witness("w1")
    note = sign_note(CHECKPOINT, log)
    answer = add_signatures(note, w1).split(b"\n\n")[1].split(b"\n", 1)[1]
    merged = add_signature_lines(note, answer)
    assert merged == add_signatures(note, w1)
    with pytest.raises(NoteError):
        add_signature_lines(note, b"not a signature line\n")
    with pytest.raises(NoteError):
        add_signature_lines(note, answer.rstrip(b"\n"))


# -- properties ------------------------------------------------------------------------------

names_st = st.text(
    st.characters(blacklist_categories=["Cc", "Cs", "Zs", "Zl", "Zp"], blacklist_characters="+"),
    min_size=1,
    max_size=12,
).filter(lambda s: not any(c.isspace() for c in s))
text_st = st.lists(
    st.text(st.characters(blacklist_categories=["Cc", "Cs"]), max_size=20), min_size=1
).map(lambda lines: "\n".join(lines) + "\n")
sig_st = st.builds(
    NoteSignature, names_st, st.binary(min_size=4, max_size=4), st.binary(min_size=1, max_size=80)
)


@settings(max_examples=200, deadline=None)
@given(text=text_st, sigs=st.lists(sig_st, min_size=1, max_size=8))
def test_format_and_parse_round_trip(text: str, sigs: list[NoteSignature]) -> None:
    note = Note(text, tuple(sigs))
    data = format_note(note)
    assert parse_note(data) == note
    assert format_note(parse_note(data)) == data


@settings(max_examples=100, deadline=None)
@given(text=text_st, data=st.data())
def test_any_changed_byte_of_the_text_fails_or_is_malformed(text: str, data: st.DataObject) -> None:
    signer = Ed25519Signer("k", ed25519_key("k"))
    note = sign_note(text, signer)
    at = data.draw(st.integers(0, len(text.encode()) - 1))
    changed = note[:at] + bytes([note[at] ^ data.draw(st.integers(1, 255))]) + note[at + 1 :]
    with pytest.raises(NoteError):
        open_note(changed, [signer.verifier()])


def test_cosignature_verifier_rejects_wrong_lengths() -> None:
    verifier = CosignatureVerifier("w1", ed25519_key("witness w1").public_key())
    assert not verifier.verify(CHECKPOINT.encode(), b"\x00" * 71)
    with pytest.raises(NoteError, match="72 bytes"):
        cosignature_time(NoteSignature("w1", b"abcd", b"\x00" * 64))
    signer = CosignatureSigner("w1", ed25519_key("witness w1"), clock=lambda: 5)
    assert verifier.verify(CHECKPOINT.encode(), signer.sign(CHECKPOINT.encode()))
