"""The models on SQLite and PostgreSQL: what each table holds and which values it refuses."""

import datetime
import decimal

import peewee
import pytest

from directory_api import db, migrations
from directory_api.models import Company, Enrolment, QueueMessage, Rejection, Supplier


def make_company(number="SC123456"):
    return Company.create(number=number, name="Acme Ltd", export_status="YES",
                          date_of_creation=datetime.date(2000, 1, 2))


def test_enrolment_keeps_its_json_data_as_given(database):
    data = {"sso_id": 1, "company_name": "Ünïcode ☃", "extra": [1, {"nested": None}]}
    enrolment = Enrolment.create(data=data, sqs_message_id="m-1")
    assert Enrolment.get_by_id(enrolment.id).data == data


def test_enrolment_message_id_is_unique(database):
    Enrolment.create(data={}, sqs_message_id="m-1")
    with pytest.raises(peewee.IntegrityError), database.atomic():
        Enrolment.create(data={}, sqs_message_id="m-1")


def test_enrolment_gets_a_creation_time(database):
    enrolment = Enrolment.create(data={}, sqs_message_id="m-1")
    assert isinstance(Enrolment.get_by_id(enrolment.id).created, datetime.datetime)


def test_company_number_is_unique(database):
    make_company()
    with pytest.raises(peewee.IntegrityError), database.atomic():
        make_company()


def test_company_keeps_date_and_decimal_revenue(database):
    company = make_company()
    company.revenue = decimal.Decimal("123456789012345.67")
    company.save()
    stored = Company.get_by_id(company.id)
    assert stored.date_of_creation == datetime.date(2000, 1, 2)
    assert stored.revenue == decimal.Decimal("123456789012345.67")


def test_supplier_belongs_to_a_company(database):
    company = make_company()
    Supplier.create(sso_id=2**40, company_email="a@example.com", company=company)
    supplier = Supplier.get(sso_id=2**40)
    assert supplier.company.number == "SC123456"
    assert supplier.mobile_number == "" and supplier.referrer == ""


def test_supplier_sso_id_is_unique(database):
    company = make_company()
    Supplier.create(sso_id=1, company_email="a@example.com", company=company)
    with pytest.raises(peewee.IntegrityError), database.atomic():
        Supplier.create(sso_id=1, company_email="b@example.com", company=company)


def test_supplier_needs_an_existing_company(database):
    with pytest.raises(peewee.IntegrityError), database.atomic():
        Supplier.create(sso_id=1, company_email="a@example.com", company=12345)


def test_rejection_keeps_its_errors(database):
    Rejection.create(message_id="m-1", errors={"sso_id": ["This field is required."]})
    assert Rejection.get(message_id="m-1").errors == {"sso_id": ["This field is required."]}


def test_queue_message_keeps_body_and_attributes(database):
    QueueMessage.create(id="q-1", queue="enrolment", body='{"a": 1}', attributes={"k": "v"}, visible_at=0.0)
    stored = QueueMessage.get_by_id("q-1")
    assert stored.body == '{"a": 1}' and stored.attributes == {"k": "v"} and stored.receive_count == 0


@pytest.mark.postgres
def test_json_columns_are_jsonb_on_postgres(postgres_url):
    database = db.bind(postgres_url)
    migrations.migrate(database)
    column_type = database.execute_sql(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'enrolment' AND column_name = 'data'"
    ).fetchone()[0]
    database.execute_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    database.close()
    assert column_type == "jsonb"
