"""The worker's points 7 and 8: a re-driven message keeps its original id; a client's retry is not a rejection."""

import json

from directory_api import saving, web
from directory_api.models import Company, Enrolment, EnrolmentRetry, Rejection, Supplier, utcnow
from directory_api.saving import COMPANY_ALREADY_REGISTERED
from tests.factories import enrolment_body, enrolment_payload, save_one, web_settings
from tests.support.workers import received
from tests.support.wsgi import app_signed_get as signed_get


def rows() -> tuple[int, int, int]:
    return Enrolment.select().count(), Company.select().count(), Supplier.select().count()


def status_of(worker, message_id: str) -> dict:
    app = web.make_app(web_settings(), worker.enrolments)
    return signed_get(app, f"/enrolment/{message_id}/")[2]


def redriven(body: str, original_message_id: str) -> dict:
    return {"body": body, "attributes": {"original_message_id": original_message_id}}


def test_a_redriven_message_is_saved_under_its_original_id(make_worker):
    worker = make_worker()
    new_id = worker.enrolments.send(**redriven(enrolment_body(company_number="SC000007"), "original-1"))
    worker.run(once=True)
    assert Enrolment.get(sqs_message_id="original-1").data["company_number"] == "SC000007"
    assert not Enrolment.select().where(Enrolment.sqs_message_id == new_id).exists()
    assert received(worker.enrolments) == []


def test_a_redriven_message_whose_original_was_saved_is_deleted_without_a_second_row(make_worker):
    worker = make_worker()
    body = enrolment_body()
    save_one("original-1", json.loads(body))
    worker.enrolments.send(**redriven(body, "original-1"))
    worker.run(once=True)
    assert rows() == (1, 1, 1)
    assert received(worker.enrolments) == [] and received(worker.invalid) == []


def test_two_copies_of_a_redriven_message_in_one_batch_are_saved_once(make_worker):
    worker = make_worker()
    body = enrolment_body()
    worker.enrolments.send(**redriven(body, "original-1"))
    worker.enrolments.send(**redriven(body, "original-1"))
    worker.run(once=True)
    assert rows() == (1, 1, 1)
    assert received(worker.invalid) == []


def test_a_redriven_message_that_still_cannot_be_saved_is_set_aside_again_with_fresh_reasons(make_worker):
    worker = make_worker()
    save_one("earlier", enrolment_payload(company_number="01234567"))
    Rejection.create(message_id="original-1", errors={"sso_id": ["an old reason"]}, redriven=utcnow())
    worker.enrolments.send(**redriven(enrolment_body(company_number="01234567"), "original-1"))
    worker.run(once=True)
    [set_aside] = received(worker.invalid)
    assert set_aside.attributes["original_message_id"] == "original-1"
    rejection = Rejection.get(message_id="original-1")
    assert (rejection.errors, rejection.redriven) == ({"company_number": [COMPANY_ALREADY_REGISTERED]}, None)


def test_the_original_id_of_a_redriven_message_answers_created_once_it_is_saved(make_worker):
    worker = make_worker()
    Rejection.create(message_id="original-1", errors={"company_number": ["gone since"]}, redriven=utcnow())
    worker.enrolments.send(**redriven(enrolment_body(), "original-1"))
    worker.run(once=True)
    answer = status_of(worker, "original-1")
    assert answer == {"id": "original-1", "status": "created",
                      "enrolment_id": Enrolment.get(sqs_message_id="original-1").id}


def test_a_clients_retry_is_created_with_the_saved_enrolments_id_and_no_new_rows(make_worker):
    worker = make_worker()
    payload = enrolment_payload()
    first = worker.enrolments.send(json.dumps(payload))
    worker.run(once=True)
    # The same JSON object, keys in another order, other whitespace.
    retry = worker.enrolments.send(json.dumps(dict(reversed(payload.items())), indent=2))
    worker.run(once=True)
    assert rows() == (1, 1, 1)
    assert received(worker.invalid) == []
    enrolment_id = Enrolment.get(sqs_message_id=first).id
    assert status_of(worker, retry) == {"id": retry, "status": "created", "enrolment_id": enrolment_id}
    assert not Rejection.select().exists()


def test_a_retry_in_the_same_batch_as_its_first_send_is_created_with_the_same_enrolment(make_worker):
    worker = make_worker()
    body = enrolment_body()
    first, retry = worker.enrolments.send(body), worker.enrolments.send(body)
    worker.run(once=True)
    assert rows() == (1, 1, 1)
    # Either may come first off the queue: one is the enrolment, the other its retry.
    [saved] = Enrolment.select()
    [retried] = EnrolmentRetry.select()
    assert {saved.sqs_message_id, retried.message_id} == {first, retry}
    assert retried.enrolment_id == saved.id


def test_a_different_payload_for_a_registered_company_is_still_set_aside(make_worker):
    worker = make_worker()
    payload = enrolment_payload()
    worker.enrolments.send(json.dumps(payload))
    worker.enrolments.send(json.dumps({**payload, "company_name": "Another Name Ltd"}))
    worker.run(once=True)
    [set_aside] = received(worker.invalid)
    assert json.loads(set_aside.attributes["errors"]) == {
        "company_number": [COMPANY_ALREADY_REGISTERED], "sso_id": [saving.ALREADY_A_SUPPLIER]}
    assert not EnrolmentRetry.select().exists()
