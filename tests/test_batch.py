"""batch: the worker's pure per-batch functions, without a queue or a database."""

import json

from directory_api import batch
from directory_api.queues import Message, message_size
from directory_api.saving import Created, Duplicate, Invalid


def message(message_id: str, body: str = "{}", **attributes: str) -> Message:
    return Message(id=message_id, body=body, receipt=f"r-{message_id}", attributes=attributes)


def test_set_aside_attributes_keep_every_reason_when_the_queue_has_no_size_limit():
    message = Message(id="m-1", body="x" * 1_000_000, receipt="r-1")
    reasons = {"sso_id": ["A reason."] * 1000}
    assert json.loads(batch.set_aside_attributes(message, reasons, None)["errors"]) == reasons


def test_set_aside_attributes_leave_the_reasons_off_when_not_even_the_marker_fits():
    message = Message(id="m-1", body="x" * 1000, receipt="r-1")
    limit = message_size(message.body, {"original_message_id": "m-1", "errors": ""}) + 20
    assert batch.set_aside_attributes(message, {"sso_id": ["A reason."]}, limit) == {
        "original_message_id": "m-1"}


def test_a_body_that_is_not_json_decodes_as_invalid_with_the_reason():
    verdict = batch.decode(message("m-1", "{not json"), max_receive_count=5)
    assert isinstance(verdict, Invalid) and "not JSON" in verdict.errors["non_field_errors"][0]


def test_a_message_received_too_often_decodes_as_invalid_whatever_its_body():
    received_six_times = Message(id="m-1", body="{}", receipt="r-1", receive_count=6)
    verdict = batch.decode(received_six_times, max_receive_count=5)
    assert verdict.errors == {"non_field_errors": [batch.RECEIVED_TOO_OFTEN.format(count=6, limit=5)]}


def test_two_messages_under_one_original_id_are_saved_once_and_the_second_counts_as_a_duplicate():
    first, again = message("m-1", original_message_id="o-1"), message("m-2", original_message_id="o-1")
    assert list(batch.verdicts_of([first, again], max_receive_count=5)) == ["o-1"]
    outcomes = batch.outcomes_by_message([first, again], {"o-1": Created(7)})
    assert outcomes == {"m-1": Created(7), "m-2": Duplicate()}


def test_tally_and_rejected_say_what_became_of_a_batch():
    messages = [message("m-1"), message("m-2"), message("m-3")]
    outcomes = {"m-1": Created(1), "m-2": Duplicate(), "m-3": Invalid({"sso_id": ["bad"]})}
    assert batch.tally(outcomes) == {"saved": 1, "duplicate": 1, "set_aside": 1}
    assert batch.rejected(messages, outcomes) == [messages[2]]


def test_a_message_queued_with_a_request_id_is_logged_with_it():
    assert batch.about(message("m-1", request_id="req-1")) == (
        " (request_id=req-1)", {"message_id": "m-1", "request_id": "req-1"})
    assert batch.about(message("m-2")) == ("", {"message_id": "m-2"})
