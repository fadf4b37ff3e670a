"""The ops console at /ops/, through the WSGI app `serve` runs: pages, authentication, CSRF, headers, escaping."""

import base64
import io
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from directory_api import console, throttle, web
from directory_api import db as db_module
from directory_api.models import Company, Rejection
from directory_api.ops import counting, export, queries
from directory_api.queues import QueueUnavailable
from directory_api.settings import Settings
from tests.factories import enrolment_body, enrolment_payload, save_one
from tests.support.console import HOST, ORIGIN, PASSWORD, Answer, basic, call, console_app, csrf_token, post, set_aside
from tests.support.wsgi import wsgi_call


@pytest.fixture
def worker(make_worker):
    return make_worker()


@pytest.fixture
def app(worker, monkeypatch):
    return console_app(worker, monkeypatch)


PAGES = ["/ops/", "/ops/enrolments", "/ops/enrolments?q=acme&by=company_name", "/ops/rejections",
         "/ops/messages/m-1", "/ops/export.csv?table=enrolments", "/ops/console.css", "/ops/no-such-page"]


# authentication


def test_the_console_is_off_without_ops_password(worker):
    settings = Settings.from_environ({"UI_SECRET": "not-a-real-ui-secret", "DATABASE_URL": worker.settings.database_url,
                                      "SQS_ENROLMENT_QUEUE_NAME": "e", "SQS_INVALID_ENROLMENT_QUEUE_NAME": "i"})
    application = web.make_app(settings, worker.enrolments)
    answer = call(application, "GET", "/ops/")
    assert answer.status == 404
    assert answer.headers["content-type"] == "application/json"


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
@pytest.mark.parametrize("auth", [
    None, basic(password="wrong"), basic(user="admin"), basic(password=PASSWORD + "x"), "Bearer abc",
    "Basic !!!not-base64", "Basic " + base64.b64encode(PASSWORD.encode()).decode(),
])
@pytest.mark.parametrize("path", ["/ops/", "/ops/rejections", "/ops/export.csv?table=suppliers", "/ops/no-such-page"])
def test_without_the_right_credentials_every_path_is_401_asking_for_basic(app, auth, path):
    answer = call(app, "GET", path, auth=auth)
    assert answer.status == 401
    assert answer.headers["www-authenticate"].startswith("Basic ")
    assert b"<" not in answer.body and b"csv" not in answer.body.lower()


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_the_password_is_compared_in_constant_time(app, monkeypatch):
    compared = []
    real = console.hmac.compare_digest
    monkeypatch.setattr(console.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    call(app, "GET", "/ops/", auth=basic(password="guess"))
    assert (b"guess", PASSWORD.encode()) in compared


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
@pytest.mark.parametrize("path", PAGES)
def test_every_answer_carries_the_security_headers(app, path):
    for auth in (basic(), None):
        headers = call(app, "GET", path, auth=auth).headers
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "http" not in csp  # no other origin


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
@pytest.mark.parametrize("path", PAGES[:5])
def test_no_page_loads_anything_from_another_origin_or_runs_script(app, path):
    text = call(app, "GET", path).text
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href|action)="(https?:)?//', text)


# CSRF and same origin


@pytest.fixture
def one_rejection(worker):
    [message_id] = set_aside(worker, enrolment_body(export_status="MAYBE"))
    return message_id


def nothing_moved(worker) -> bool:
    return worker.enrolments.depth().waiting == 0 and Rejection.get().redriven is None


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
@pytest.mark.parametrize("path", ["/ops/rejections/redrive", "/ops/rejections/redrive-all"])
def test_a_post_without_the_csrf_token_is_403_and_moves_nothing(app, worker, one_rejection, path):
    answer = post(app, path, {"message_id": one_rejection})
    assert answer.status == 403
    assert "security token" in answer.text
    assert nothing_moved(worker)


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
@pytest.mark.parametrize("token", ["", "abc", "123.abc", f"{int(time.time())}.{'0' * 64}", "1.2.3"])
def test_a_post_with_a_forged_csrf_token_is_403_and_moves_nothing(app, worker, one_rejection, token):
    answer = post(app, "/ops/rejections/redrive", {"message_id": one_rejection, "csrf_token": token})
    assert answer.status == 403
    assert nothing_moved(worker)


def test_an_expired_csrf_token_is_refused():
    tokens = console.CsrfTokens(b"pw", clock=lambda: 1_000_000)
    old = tokens.new()
    tokens.clock = lambda: 1_000_000 + console.CSRF_LIFETIME_SECONDS + 1
    assert not tokens.valid(old)
    assert tokens.valid(tokens.new())


def test_a_csrf_token_made_under_another_password_is_refused():
    assert not console.CsrfTokens(b"one").valid(console.CsrfTokens(b"two").new())


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example.test"},
    {"Origin": "null"},
    {"Origin": f"https://{HOST}:8443"},
    {"Origin": f"https://{HOST}.evil.example.test"},
    {"Referer": "https://evil.example.test/ops/rejections"},
    {},
])
def test_a_cross_origin_post_is_403_and_moves_nothing_even_with_a_valid_token(app, worker, one_rejection, headers):
    answer = post(app, "/ops/rejections/redrive", {"message_id": one_rejection, "csrf_token": csrf_token(app)},
                  origin=None, headers=headers)
    assert answer.status == 403
    assert "Origin or Referer" in answer.text
    assert nothing_moved(worker)


def test_a_same_origin_referer_stands_in_for_a_missing_origin(app, worker, one_rejection):
    answer = post(app, "/ops/rejections/redrive", {"message_id": one_rejection, "csrf_token": csrf_token(app)},
                  origin=None, headers={"Referer": f"{ORIGIN}/ops/rejections"})
    assert answer.status == 303


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
@pytest.mark.parametrize("path", [
    "/ops/rejections/redrive", "/ops/rejections/redrive-all",
    "/ops/rejections?message_id=ID&redrive=1", "/ops/rejections/redrive?message_id=ID",
])
def test_a_get_changes_nothing(app, worker, one_rejection, path):
    answer = call(app, "GET", path.replace("ID", one_rejection))
    assert answer.status in (200, 405)
    assert nothing_moved(worker)


# pages


def test_the_overview_shows_the_status_figures(app, worker, one_rejection):
    save_one("saved", enrolment_payload())
    text = call(app, "GET", "/ops/").text
    assert re.search(r"<th scope=\"row\">enrolments</th><td class=\"number\">1</td>", text)
    assert re.search(r"rejections</a> not re-driven</th><td class=\"number\">1</td>", text)
    assert "invalid <small>enrolment-invalid</small></th><td class=\"number\">1</td>" in text


def test_search_by_company_number_links_the_enrolment_and_its_detail_shows_everything(app, worker):
    payload = enrolment_payload(company_number="SC777777", company_name="Seven Ltd", sso_id=77,
                                company_email="seven@example.com")
    created = save_one("message-77", payload)
    page = call(app, "GET", "/ops/enrolments?q=sc777777").text
    assert f'<a href="/ops/enrolments/{created.enrolment_id}">SC777777</a>' in page
    detail = call(app, "GET", f"/ops/enrolments/{created.enrolment_id}").text
    for shown in ("Seven Ltd", "message-77", "<dd>77</dd>", "&quot;company_number&quot;: &quot;SC777777&quot;",
                  "<h2>Confirmation e-mail</h2>\n<p>waiting to be sent to seven@example.com</p>"):
        assert shown in detail
    assert call(app, "GET", f"/ops/enrolments/{created.enrolment_id + 1}").status == 404


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_search_pages_with_a_link_to_older_results(app, worker):
    for _ in range(queries.PAGE_SIZE + 1):
        save_one(f"m-{_}", enrolment_payload())
    first = call(app, "GET", "/ops/enrolments").text
    older = re.search(r'<a href="(\?[^"]+)">Older results</a>', first).group(1).replace("&amp;", "&")
    assert parse_qs(older[1:])["before"]
    assert call(app, "GET", "/ops/enrolments" + older).text.count("<tr>") == 2  # header row and the oldest


@pytest.mark.parametrize("backend", ["database"])
def test_a_name_search_pages_by_name_with_a_link_to_more_results(app, worker):
    for n in range(queries.PAGE_SIZE + 1):
        save_one(f"m-{n}", enrolment_payload(company_name=f"Paged {n:03} Ltd"))
    first = call(app, "GET", "/ops/enrolments?q=paged&by=company_name").text
    more = re.search(r'<a href="(\?[^"]+)">More results</a>', first).group(1).replace("&amp;", "&")
    assert parse_qs(more[1:])["after"] == [f"paged {queries.PAGE_SIZE - 1:03} ltd"]
    last = call(app, "GET", "/ops/enrolments" + more).text
    assert f"Paged {queries.PAGE_SIZE:03} Ltd" in last and "More results" not in last


@pytest.mark.parametrize("backend", ["database"])
def test_a_malformed_page_link_shows_the_first_page(app, worker):
    save_one("m-1", enrolment_payload(company_name="Paged Ltd"))
    for keyset in ("after=paged&after_id=x", "after_id=1", "before=-1"):
        assert "Paged Ltd" in call(app, "GET", f"/ops/enrolments?q=paged&{keyset}").text


def test_a_company_name_holding_script_is_shown_escaped(app, worker):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    created = save_one("m-evil", enrolment_payload(company_number="SC666666", company_name=evil))
    for path in ("/ops/enrolments?q=SC666666", f"/ops/enrolments/{created.enrolment_id}"):
        text = call(app, "GET", path).text
        assert "<script" not in text and "<img" not in text
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_a_search_query_is_echoed_escaped(app):
    text = call(app, "GET", '/ops/enrolments?q="><script>alert(1)</script>').text
    assert "<script>" not in text and 'value="&quot;&gt;&lt;script&gt;' in text


def test_rejections_list_their_reasons_with_a_redrive_button(app, worker, one_rejection):
    text = call(app, "GET", "/ops/rejections").text
    assert one_rejection in text and "export_status" in text
    assert f'<input type="hidden" name="message_id" value="{one_rejection}">' in text
    assert 'action="/ops/rejections/redrive-all"' in text


def test_redrive_one_moves_it_and_the_worker_saves_it_under_its_original_id(app, worker):
    save_one("earlier", enrolment_payload(company_number="01234567"))
    [message_id] = set_aside(worker, enrolment_body(company_number="01234567"))
    Company.delete().where(Company.number == "01234567").execute()  # the cause, put right
    answer = post(app, "/ops/rejections/redrive", {"message_id": message_id, "csrf_token": csrf_token(app)})
    assert answer.status == 303
    assert answer.headers["location"].endswith(f"/ops/rejections?moved={message_id}")
    assert f"Re-driven: {message_id}." in call(app, "GET", f"/ops/rejections?moved={message_id}").text
    worker.run(once=True)
    state = call(app, "GET", "/ops/rejections").text
    assert re.search(r'<a href="/ops/enrolments/\d+">created: enrolment \d+</a>', state)
    assert "saved as enrolment" in call(app, "GET", f"/ops/messages/{message_id}").text


def test_redrive_all_moves_every_set_aside_message(app, worker):
    set_aside(worker, *(enrolment_body(export_status="MAYBE") for _ in range(3)))
    answer = post(app, "/ops/rejections/redrive-all", {"csrf_token": csrf_token(app)})
    assert answer.headers["location"].endswith("/ops/rejections?moved_count=3")
    assert worker.enrolments.depth().waiting == 3
    assert "No rejection waiting for a re-drive." in call(app, "GET", "/ops/rejections").text


def test_redrive_of_an_id_no_longer_on_the_queue_says_so(app, worker):
    token = console.CsrfTokens(PASSWORD.encode()).new()  # no rejection listed: no form to take it from
    answer = post(app, "/ops/rejections/redrive", {"message_id": "gone", "csrf_token": token})
    assert answer.headers["location"].endswith("/ops/rejections?missing=gone")
    assert "gone is not on the invalid queue" in call(app, "GET", "/ops/rejections?missing=gone").text


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
@pytest.mark.parametrize("table", sorted(export.EXPORTS))
def test_each_export_downloads_as_csv_named_as_the_2017_service_named_it(app, worker, table):
    save_one("m-1", enrolment_payload())
    answer = call(app, "GET", f"/ops/export.csv?table={table}")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(rf'attachment; filename="find-a-buyer_{table}_\d{{14}}\.csv"',
                        answer.headers["content-disposition"])
    assert answer.text.startswith(",".join(export.EXPORTS[table].columns) + "\r\n")


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_an_export_since_a_bad_date_is_400(app):
    assert call(app, "GET", "/ops/export.csv?table=enrolments&since=soon").status == 400


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_ops_without_the_slash_redirects_to_the_console(app):
    answer = call(app, "GET", "/ops")
    assert answer.status == 301 and answer.headers["location"].endswith("/ops/")


def test_the_templates_are_read_through_importlib_resources_so_they_load_from_the_pyz():
    assert "{{!body}}" in console._template_text("base.tpl")


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_a_page_whose_database_does_not_answer_is_503_saying_so(worker, monkeypatch):
    settings = Settings.from_environ({
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nothing", "UI_SECRET": "not-a-real-ui-secret",
        "SQS_ENROLMENT_QUEUE_NAME": "enrolment", "SQS_INVALID_ENROLMENT_QUEUE_NAME": "enrolment-invalid",
        "QUEUE_BACKEND": "sqs", "OPS_PASSWORD": PASSWORD,
    })
    unreachable = db_module.database_for(settings.database_url)
    monkeypatch.setattr(console, "open_enrolment_queues", lambda settings: (worker.enrolments, worker.invalid))
    monkeypatch.setattr(db_module.models.database, "obj", unreachable)  # the models bound to it
    application = web.make_app(settings, worker.enrolments)
    answer = call(application, "GET", "/ops/enrolments/1")
    assert answer.status == 503
    assert "The database does not answer now" in answer.text
    assert answer.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_the_console_takes_at_most_its_share_of_threads_and_then_answers_503(app, monkeypatch):
    held = []
    for _ in range(console.CONSOLE_REQUESTS):  # requests in flight: each holds a slot until its body is closed
        held.append(call_open(app, "/ops/export.csv?table=enrolments"))
    answer = call(app, "GET", "/ops/")
    assert answer.status == 503 and answer.headers["retry-after"] == "5"
    assert answer.headers["x-frame-options"] == "DENY"
    for body in held:
        body.close()
    assert call(app, "GET", "/ops/").status == 200


def call_open(app, path: str):
    """Start a GET and leave its body unread and open, as a slow download would."""
    parts = urlsplit(path)
    environ = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": parts.path, "QUERY_STRING": parts.query,
        "SERVER_NAME": HOST, "SERVER_PORT": "443", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": HOST,
        "wsgi.url_scheme": "https", "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(),
        "HTTP_AUTHORIZATION": basic(),
    }
    return app(environ, lambda status, headers, exc_info=None: None)


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_redrives_answered_with_an_empty_303_free_their_slots(app):
    token = console.CsrfTokens(PASSWORD.encode()).new()
    for _ in range(console.CONSOLE_REQUESTS):
        answer = post(app, "/ops/rejections/redrive-all", {"csrf_token": token})
        assert answer.status == 303 and answer.body == b""
    assert call(app, "GET", "/ops/").status == 200


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
@pytest.mark.parametrize("path", ["/ops/", "/ops/export.csv?table=enrolments"])
def test_authenticated_heads_free_their_slots(app, path):
    for _ in range(console.CONSOLE_REQUESTS + 1):
        answer = call(app, "HEAD", path)
        assert answer.status == 200 and answer.body == b""
    assert call(app, "GET", "/ops/").status == 200


# failed logins


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """The console's login throttle on a clock the test moves (set before the app is made)."""
    clock = Clock()
    monkeypatch.setattr(console, "LoginThrottle", lambda: throttle.LoginThrottle(clock))
    return clock


def guess(app, client="192.0.2.66"):
    return call(app, "GET", "/ops/", auth=basic(password="guess"), client=client)


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_failed_logins_from_one_address_make_it_wait_and_its_tries_are_not_checked(clock, app):
    for _ in range(throttle.FREE_FAILURES + 1):
        assert guess(app).status == 401
    refused = call(app, "GET", "/ops/", client="192.0.2.66")  # even the right password waits
    assert refused.status == 429 and refused.headers["retry-after"] == "1"
    assert refused.headers["x-frame-options"] == "DENY" and b"try again in 1 seconds" in refused.body
    assert call(app, "GET", "/ops/", client="192.0.2.10").status == 200  # another address: the operator's
    clock.now += 1
    assert call(app, "GET", "/ops/", client="192.0.2.66").status == 200
    assert guess(app).status == 401  # the success forgot the address: free failures again


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_the_wait_after_failed_logins_is_capped_so_the_operator_is_never_out_for_long(clock, app):
    for _ in range(throttle.FREE_FAILURES + 20):
        guess(app)
        clock.now += 60  # each try as soon as allowed
    clock.now -= 60
    assert guess(app).status == 429
    assert int(guess(app).headers["retry-after"]) <= throttle.MAX_WAIT_SECONDS
    clock.now += throttle.MAX_WAIT_SECONDS
    assert call(app, "GET", "/ops/", client="192.0.2.66").status == 200


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_a_failed_login_is_a_warning_naming_the_address_and_never_the_password(clock, app, caplog):
    with caplog.at_level("INFO", logger="directory_api.console"):
        guess(app)
    [record] = [r for r in caplog.records if r.name == "directory_api.console"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == "ops console: failed login from 192.0.2.66 (1 in a row)"
    assert "guess" not in caplog.text


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_a_request_without_credentials_is_asked_for_them_and_not_counted_as_a_failure(clock, app, caplog):
    for _ in range(throttle.FREE_FAILURES + 5):
        assert call(app, "GET", "/ops/", auth=None, client="192.0.2.66").status == 401
    assert call(app, "GET", "/ops/", client="192.0.2.66").status == 200
    assert "failed login" not in caplog.text


def test_a_csv_download_neutralises_cells_a_spreadsheet_would_run_as_formulas(app):
    save_one("m-1", enrolment_payload(company_name='=HYPERLINK("http://evil.example/","Open")'))
    answer = call(app, "GET", "/ops/export.csv?table=companies")
    assert answer.status == 200
    assert "'=HYPERLINK(" in answer.text and ",=HYPERLINK(" not in answer.text


# "Re-drive all" asks first


def confirmation(app) -> Answer:
    return call(app, "GET", "/ops/rejections/redrive-all")


def test_redrive_all_on_the_rejections_page_only_opens_its_confirmation(app, worker, one_rejection):
    text = call(app, "GET", "/ops/rejections").text
    form = re.search(r'<form class="redrive-all"[^>]*>', text).group(0)
    assert 'method="get"' in form and 'action="/ops/rejections/redrive-all"' in form


def test_the_redrive_all_confirmation_names_how_many_messages_it_moves_and_moves_nothing(app, worker):
    set_aside(worker, *(enrolment_body(export_status="MAYBE") for _ in range(3)))
    answer = confirmation(app)
    assert answer.status == 200
    about = "" if worker.settings.queue_backend == "database" else "about "
    assert f"This moves <strong>{about}3 messages</strong>" in answer.text
    assert f"Re-drive {about}3 messages</button>" in answer.text
    assert worker.enrolments.depth().waiting == 0 and worker.invalid.depth().waiting == 3


def test_the_confirmations_form_moves_them_with_its_token_from_the_same_origin(app, worker):
    set_aside(worker, *(enrolment_body(export_status="MAYBE") for _ in range(3)))
    form = re.search(r'<form class="confirm" method="post" action="([^"]+)">\s*'
                     r'<input type="hidden" name="csrf_token" value="([^"]+)">', confirmation(app).text)
    assert form.group(1) == "/ops/rejections/redrive-all"
    refused = post(app, form.group(1), {"csrf_token": form.group(2)}, origin="https://evil.example.test")
    assert refused.status == 403 and worker.enrolments.depth().waiting == 0
    answer = post(app, form.group(1), {"csrf_token": form.group(2)})
    assert answer.status == 303 and answer.headers["location"].endswith("/ops/rejections?moved_count=3")
    assert worker.enrolments.depth().waiting == 3


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_with_nothing_set_aside_the_confirmation_says_so_and_offers_no_button(app):
    text = confirmation(app).text
    assert "there is nothing to re-drive" in text and "<button" not in text.split("<main>")[1]


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_when_the_invalid_queue_does_not_answer_the_confirmation_says_so_and_offers_no_button(app, worker,
                                                                                              monkeypatch):
    def down():
        raise QueueUnavailable("connection refused")

    monkeypatch.setattr(worker.invalid, "depth", down)
    answer = confirmation(app)
    assert answer.status == 200 and "does not answer now" in answer.text
    assert "<button" not in answer.text.split("<main>")[1]


def test_the_overview_marks_estimated_figures_about(app, monkeypatch):
    save_one("saved", enrolment_payload())
    monkeypatch.setattr(counting, "MAX_EXACT_COST", -1.0)  # as at a million rows
    monkeypatch.setattr(counting, "is_postgres", lambda database: True)  # SQLite too, for the page's sake
    monkeypatch.setattr(counting, "plan", lambda query: (1e6, 1_000_213))
    text = call(app, "GET", "/ops/").text
    assert re.search(r'<th scope="row">enrolments</th><td class="number">about 1,000,000</td>', text)


# values as the cards show them


def test_an_empty_field_shows_a_dash(app):
    created = save_one("m-1", enrolment_payload(mobile_number="", referrer=""))
    text = call(app, "GET", f"/ops/enrolments/{created.enrolment_id}").text
    assert "<dt>mobile number</dt><dd>-</dd>" in text and "<dt>referrer</dt><dd>-</dd>" in text
    assert "<dt>revenue</dt><dd>125000.50</dd>" in text


@pytest.mark.parametrize("value, shown", [
    (None, "-"), ("", "-"), ("sales@acme.example.com", "sales<wbr>@acme.<wbr>example.<wbr>com"),
    ('"<b>"@example.com', "&quot;&lt;b&gt;&quot;<wbr>@example.<wbr>com"),
])
def test_an_email_may_break_only_at_its_at_and_dots_and_is_escaped(value, shown):
    assert console.email_shown(value) == shown


def behind_a_tls_proxy(app, method: str, path: str, form: dict | None = None, **headers: str) -> tuple[int, str]:
    """(status, Location) of a console request as serve sees it behind a TLS-terminating proxy: plain http."""
    body = "&".join(f"{k}={v}" for k, v in (form or {}).items()).encode()
    sent = {"Authorization": basic(), "Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded", **headers}
    status, answer_headers, _ = wsgi_call(app, method, path, body, sent, SERVER_NAME="127.0.0.1", SERVER_PORT="8000",
                                          HTTP_HOST=HOST, **{"wsgi.url_scheme": "http"})
    return status, answer_headers.get("location", "")


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_a_redrive_redirects_to_the_scheme_and_host_the_browser_used_behind_a_tls_proxy(app):
    # Built from serve's own scheme it pointed an https console at http://, and any client's X-Forwarded-Host
    # chose its host; a path alone keeps whatever the browser used.
    form = {"message_id": "gone", "csrf_token": console.CsrfTokens(PASSWORD.encode()).new()}
    answer = behind_a_tls_proxy(app, "POST", "/ops/rejections/redrive", form, **{"X-Forwarded-Host": "evil.example"})
    assert answer == (303, "/ops/rejections?missing=gone")


@pytest.mark.parametrize("backend", ["database"])  # the queue backend does not matter here
def test_ops_without_the_slash_redirects_to_a_path_whatever_host_header_the_proxy_forwards(app):
    answer = behind_a_tls_proxy(app, "GET", "/ops", **{"X-Forwarded-Host": "evil.example"})
    assert answer == (301, "/ops/")
