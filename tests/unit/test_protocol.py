"""Bridge protocol: frames parse into their models, bad frames say what is wrong."""

from __future__ import annotations

import json

import pytest

from extension_bridge import EXTENSION_DIR, protocol
from extension_bridge.protocol import ChatTurn, JobResult, JobRun

pytestmark = pytest.mark.unit


def test_round_trip_is_camel_case() -> None:
    run = JobRun(tab_id=7, job_id="j1", prompt="p", options={"count": 1})
    wire = json.loads(protocol.dump(run))
    assert wire["type"] == "job.run" and wire["tabId"] == 7 and wire["protocol"] == 1
    assert protocol.parse(protocol.dump(run)) == run


def test_result_from_the_extension() -> None:
    frame = json.dumps(
        {
            "type": "job.result",
            "id": "m1",
            "protocol": 1,
            "tabId": 3,
            "jobId": "j1",
            "images": [{"url": "http://x/i.png", "width": 5}],
        }
    )
    msg = protocol.parse(frame)
    assert isinstance(msg, JobResult) and msg.images[0].width == 5


def test_chat_fields_of_job_run_are_camel_case_and_default_to_an_image_prompt() -> None:
    plain = json.loads(protocol.dump(JobRun(tab_id=1, job_id="j", prompt="p")))
    assert plain["chat"] is None and plain["generateImage"] is True
    run = JobRun(
        tab_id=1,
        job_id="j2",
        prompt="and then?",
        chat=ChatTurn(chat_id="c1", new=False),
        generate_image=False,
    )
    wire = json.loads(protocol.dump(run))
    assert wire["chat"] == {"chatId": "c1", "new": False} and wire["generateImage"] is False
    assert protocol.parse(protocol.dump(run)) == run


def test_result_carries_the_reply_and_may_have_no_image() -> None:
    frame = {"type": "job.result", "id": "m", "protocol": 1, "jobId": "j", "reply": "reply #2"}
    msg = protocol.parse(json.dumps(frame))
    assert isinstance(msg, JobResult) and msg.reply == "reply #2" and msg.images == []
    # An image addon's result (no reply) still parses as before.
    old = protocol.parse(json.dumps({**frame, "reply": None, "images": [{"url": "http://x"}]}))
    assert isinstance(old, JobResult) and old.reply is None and old.images[0].url == "http://x"


def test_a_chat_turn_needs_its_chat_id() -> None:
    frame = {"type": "job.run", "id": "m", "protocol": 1, "tabId": 1, "jobId": "j"}
    with pytest.raises(protocol.ProtocolError, match="chatId"):
        protocol.parse(json.dumps({**frame, "prompt": "p", "chat": {"new": True}}))


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ({"type": "job.teleport", "id": "1", "protocol": 1}, "type"),
        (
            {
                "type": "job.progress",
                "id": "1",
                "protocol": 1,
                "jobId": "j",
                "progress": 101,
                "stage": "x",
            },
            "progress",
        ),
        ({"type": "ping", "id": "1", "protocol": 2}, "protocol"),
    ],
)
def test_bad_frames(frame: dict[str, object], words: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=words):
        protocol.parse(json.dumps(frame))


def test_schema_exported_for_the_extension_is_current() -> None:
    shipped = json.loads((EXTENSION_DIR / "protocol_schema.json").read_text())
    assert shipped == protocol.json_schema()
