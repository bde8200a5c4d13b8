"""Latin-1 bytes with an empty MSH-18 (issue 24 item 6): the decision is to accept them (ISO-8859-1
fallback, as real feeds without MSH-18 send, two scout corpus files among them), and the README
says so. Over the real MLLP listener in enhanced mode (CA, stored as sent) and through the
worker's parse (the umlauts read right); a message that declares UTF-8 falsely is CR."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.settings import Settings
from adapter.store import Store
from mappings.framing import frame
from mappings.inbound import parse_message
from tests.test_mllp import Listener, msa, send_raw

ROOT = Path(__file__).resolve().parents[1]
LATIN1 = (
    "MSH|^~\\&|RIS|FAC|RB|RBF|20260101||ORU^R01|{id}|P|2.5|||AL|NE||{charset}\r"
    "PID|1||M1\rOBR|1||A1\rOBX|1|TX|X||Größe 12 mm, kein Erguß.||||||F"
)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running = Listener(Store.open(Settings(data_dir=tmp_path)))  # type: ignore[call-arg]
    yield running
    running.close()


def test_latin1_without_msh18_is_accepted_and_read_as_latin1(listener: Listener) -> None:
    payload = LATIN1.format(id="LAT1", charset="").encode("iso-8859-1")
    (ack,) = send_raw(listener.port, frame(payload))
    assert msa(ack)[1:3] == ["CA", "LAT1"]
    (message_id,) = listener.accepted
    assert listener.store.raw(message_id) == payload  # stored as sent
    (report,) = parse_message(
        payload, "x-application/hl7-v2+er7", default_charset="utf-8", default_language="de"
    )
    assert "Größe 12 mm, kein Erguß." in report.text


def test_a_false_utf8_declaration_is_refused(listener: Listener) -> None:
    payload = LATIN1.format(id="LAT2", charset="UNICODE UTF-8").encode("iso-8859-1")
    (ack,) = send_raw(listener.port, frame(payload))
    assert msa(ack)[1:3] == ["CR", "LAT2"] and b"ERR|||102^" in ack
    assert listener.accepted == []


def test_the_readme_states_the_decision() -> None:
    readme = " ".join((ROOT / "README.md").read_text("utf-8").split())
    assert "An empty MSH-18 is not a declaration" in readme
    assert "as ISO-8859-1" in readme and "such a message is accepted (AA/CA)" in readme
    assert "declares UTF-8 in MSH-18 and is not gets AR (ERR 102)" in readme
