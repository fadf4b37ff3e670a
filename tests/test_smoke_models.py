import datetime

from directory_api.models import Company, Enrolment, Supplier


def test_enrolment_company_and_supplier_round_trip(database):
    enrolment = Enrolment.create(data={"sso_id": 1, "name": "Ünïcode"}, sqs_message_id="m-1")
    company = Company.create(number="SC123456", name="Acme", export_status="YES",
                             date_of_creation=datetime.date(2000, 1, 2))
    Supplier.create(sso_id=1, company_email="a@example.com", company=company)
    assert Enrolment.get_by_id(enrolment.id).data == {"sso_id": 1, "name": "Ünïcode"}
    assert Supplier.get(sso_id=1).company.number == "SC123456"
