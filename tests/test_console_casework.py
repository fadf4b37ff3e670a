"""The console's pages for solving a rejection (issue 23): whose it was, its payload and history, the search,
erasure behind a confirmation page, the audit. Through the WSGI app `serve` runs."""

import re
from urllib.parse import urlsplit

import pytest

from directory_api.models import Audit, Company, Enrolment, Rejection
from tests.factories import enrolment_body, enrolment_payload, save_one
from tests.support.console import OPERATOR, ORIGIN, call, console_app, csrf_token, post, set_aside

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def worker(make_worker):
    return make_worker()


@pytest.fixture
def app(worker, monkeypatch):
    return console_app(worker, monkeypatch)


def escaped_only(text: str) -> None:
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


@pytest.fixture
def conflicting(worker):
    """A registration made by mistake, and the real company's enrolment set aside because of it."""
    mistaken = save_one("mistaken", enrolment_payload(company_number="SC100000", company_name="Mistaken Ltd",
                                                         sso_id=500, company_email="wrong@example.com"))
    [message_id] = set_aside(worker, enrolment_body(company_number="SC100000", company_name="Acme Widgets Ltd",
                                                    sso_id=501, company_email="acme@example.com"))
    return mistaken.enrolment_id, message_id


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_the_rejections_list_shows_whose_enrolment_it_was_escaped(app, worker):
    set_aside(worker, enrolment_body(company_number="SC123456", company_name=EVIL, company_email="x@example.com",
                                     export_status="MAYBE"))
    text = call(app, "GET", "/ops/rejections").text
    escaped_only(text)
    assert "SC123456 · x@example.com" in text


@pytest.mark.parametrize("backend", ["database"])
def test_the_search_finds_rejections_by_company_name_as_well_as_enrolments(app, conflicting):
    _, message_id = conflicting
    text = call(app, "GET", "/ops/enrolments?q=acme+widgets").text
    assert f'<a href="/ops/messages/{message_id}"><code>{message_id}</code></a>' in text
    by_number = call(app, "GET", "/ops/enrolments?q=SC100000").text
    assert "Mistaken Ltd" in by_number and message_id in by_number  # the registration and the rejection


def test_a_rejections_page_shows_reasons_whose_it_was_and_the_payload_escaped(app, worker):
    [message_id] = set_aside(worker, enrolment_body(company_name=EVIL, sso_id=4242, export_status="MAYBE"))
    text = call(app, "GET", f"/ops/messages/{message_id}").text
    escaped_only(text)
    assert "<dt>sso id</dt><dd>4242</dd>" in text
    assert "&quot;company_name&quot;: &quot;&lt;script&gt;" in text  # the payload, indented JSON, escaped
    assert "export_status" in text
    assert "Never re-driven." in text


def test_a_redrive_and_what_became_of_it_show_on_the_rejection_the_enrolment_and_the_audit(app, worker, conflicting):
    _, message_id = conflicting
    Company.delete().where(Company.number == "SC100000").execute()
    answer = post(app, "/ops/rejections/redrive", {"message_id": message_id, "csrf_token": csrf_token(app)})
    assert answer.status == 303
    row = Audit.get()
    assert (row.action, row.subject, row.source) == ("redrive", message_id, f"console from {OPERATOR}")
    worker.run(once=True)
    enrolment = Enrolment.get(Enrolment.sqs_message_id == message_id)
    for path in (f"/ops/messages/{message_id}", f"/ops/enrolments/{enrolment.id}"):
        text = call(app, "GET", path).text
        assert f"console from {OPERATOR}" in text
        assert f"saved as enrolment {enrolment.id}</a>" in text
    audit = call(app, "GET", "/ops/audit").text
    assert f"<code>{message_id}</code>" in audit and f"saved as enrolment {enrolment.id}" in audit


@pytest.mark.parametrize("backend", ["database"])
def test_a_redrive_set_aside_again_shows_its_fresh_reasons_and_time(app, worker, conflicting):
    _, message_id = conflicting
    post(app, "/ops/rejections/redrive", {"message_id": message_id, "csrf_token": csrf_token(app)})
    worker.run(once=True)  # the cause was not put right: set aside again
    text = call(app, "GET", f"/ops/messages/{message_id}").text
    assert "set aside again at" in text and "A company with this number is already registered." in text
    listed = call(app, "GET", "/ops/rejections").text
    assert listed.index(message_id) < listed.index("</tbody>")  # waiting for a re-drive again


@pytest.mark.parametrize("backend", ["database"])
def test_erase_asks_first_naming_what_will_go_and_a_get_erases_nothing(app, conflicting):
    mistaken_id, _ = conflicting
    assert f'href="/ops/enrolments/{mistaken_id}/erase"' in call(app, "GET", f"/ops/enrolments/{mistaken_id}").text
    text = call(app, "GET", f"/ops/enrolments/{mistaken_id}/erase").text
    assert "company number <strong>SC100000</strong>, sso id <strong>500</strong>" in text
    assert re.search(r"company rows deleted</th><td class=\"number\">1</td>", text)
    # The set-aside enrolment holds the same number under another sso id: another person's, it is kept.
    assert "payloads and keys removed</th><td class=\"number\">0</td>" in text
    assert Company.select().count() == 1 and Enrolment.get_by_id(mistaken_id).erased is None


@pytest.mark.parametrize("backend", ["database"])
@pytest.mark.parametrize(("form", "origin"), [({}, ORIGIN), ({"csrf_token": "1.abc"}, ORIGIN), (None, "https://evil.test")])
def test_an_erase_post_without_token_or_from_another_origin_is_403_and_erases_nothing(app, conflicting, form, origin):
    mistaken_id, _ = conflicting
    form = {"csrf_token": csrf_token(app)} if form is None else form
    assert post(app, f"/ops/enrolments/{mistaken_id}/erase", form, origin=origin).status == 403
    assert Company.select().count() == 1 and Enrolment.get_by_id(mistaken_id).erased is None


def test_erase_from_the_console_removes_the_data_says_what_went_and_is_audited(app, conflicting):
    mistaken_id, message_id = conflicting
    answer = post(app, f"/ops/enrolments/{mistaken_id}/erase", {"csrf_token": csrf_token(app)})
    assert answer.status == 303
    location = urlsplit(answer.headers["location"])
    page = call(app, "GET", f"{location.path}?{location.query}")
    assert "Erased: company 1, supplier 1, enrolment 1, email 1, rejection 0." in page.text
    assert "was erased on" in page.text and "Mistaken Ltd" not in page.text
    assert not Company.select().exists()
    assert "Acme Widgets Ltd" in Rejection.get(message_id=message_id).payload  # another sso id's: kept
    row = Audit.get(Audit.action == "erase")
    assert (row.subject, row.source) == (f"enrolment {mistaken_id}", f"console from {OPERATOR}")
    assert "removed company 1, supplier 1" in call(app, "GET", "/ops/audit").text


@pytest.mark.parametrize("backend", ["database"])
def test_a_crafted_link_cannot_claim_an_erase_of_an_enrolment_not_erased(app, conflicting):
    mistaken_id, _ = conflicting
    text = call(app, "GET", f"/ops/enrolments/{mistaken_id}?erased=1&company=999").text
    assert "Erased:" not in text and "Mistaken Ltd" in text


@pytest.mark.parametrize("backend", ["database"])
def test_the_overview_shows_the_oldest_personal_data_kept(app, conflicting):
    text = call(app, "GET", "/ops/").text
    # Never broken inside the date or the time.
    assert re.search(r'oldest rejection holding it</th><td class="number">\n'
                     r'<span class="nowrap">\d{4}-\d\d-\d\d</span> <span class="nowrap">\d\d:\d\d</span>', text)
    assert re.search(r'oldest e-mail record holding it</th><td class="number">\n<span class="nowrap">\d{4}-', text)


@pytest.mark.parametrize("backend", ["database"])
@pytest.mark.parametrize("path", ["/ops/audit", "/ops/enrolments/1/erase", "/ops/messages/m-1"])
def test_the_new_pages_carry_the_security_headers(app, conflicting, path):
    answer = call(app, "GET", path)
    assert answer.status == 200
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
    assert "content-security-policy" in answer.headers
    assert "<script" not in answer.text


@pytest.mark.parametrize("backend", ["database"])
def test_an_erased_enrolments_page_never_shows_the_company_that_enrolled_again(app, conflicting):
    mistaken_id, _ = conflicting
    post(app, f"/ops/enrolments/{mistaken_id}/erase", {"csrf_token": csrf_token(app)})
    again = save_one("enrolled-again", enrolment_payload(company_number="SC100000", company_name="Mistaken Ltd",
                                                            sso_id=500, company_email="wrong@example.com"))
    assert again.enrolment_id != mistaken_id
    text = call(app, "GET", f"/ops/enrolments/{mistaken_id}").text
    assert "Mistaken Ltd" not in text and "wrong@example.com" not in text
    assert "No company row for this enrolment." in text
    assert "Erase this supplier" not in text  # nothing left to erase there
