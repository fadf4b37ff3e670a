"""enrolment: parsing the body and every rule of docs/http-api.md's payload table."""

import datetime

import pytest

from directory_api.enrolment import (
    MAX_DEPTH,
    NON_FIELD_ERRORS,
    BodyError,
    parse,
    too_deep,
    validate,
)

TODAY = datetime.date(2026, 6, 15)


def valid(**changes) -> dict:
    payload = {
        "sso_id": 1,
        "company_number": "01234567",
        "company_name": "Acme Exports Ltd",
        "company_email": "enquiries@acme.example.com",
        "export_status": "YES",
        "date_of_creation": "2010-03-01",
    }
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not ...}


def errors_of(**changes) -> dict:
    return validate(valid(**changes), today=TODAY)


def test_a_complete_payload_is_valid():
    assert errors_of(mobile_number="07700900000", referrer="google", revenue="125000.50") == {}


def test_unknown_extra_fields_are_allowed():
    assert errors_of(favourite_colour="blue") == {}


@pytest.mark.parametrize(
    "field", ["sso_id", "company_number", "company_name", "company_email", "export_status", "date_of_creation"]
)
def test_required_fields_must_be_present(field):
    assert errors_of(**{field: ...}) == {field: ["This field is required."]}


@pytest.mark.parametrize("field", ["mobile_number", "referrer", "revenue"])
def test_optional_fields_may_be_left_out(field):
    assert field not in valid() and errors_of() == {}


def test_a_payload_that_is_not_an_object_is_a_non_field_error():
    assert validate(["sso_id", 1]) == {NON_FIELD_ERRORS: ["The body must be a JSON object, not an array."]}


@pytest.mark.parametrize("sso_id", [0, -1, 2**63, "1", 1.0, True, None])
def test_sso_id_must_be_an_integer_from_1_that_fits_a_bigint(sso_id):
    assert "sso_id" in errors_of(sso_id=sso_id)


def test_sso_id_may_be_the_largest_bigint():
    assert errors_of(sso_id=2**63 - 1) == {}


@pytest.mark.parametrize("number", ["01234567", "SC123456", "NI000001"])
def test_company_numbers_in_companies_house_style_are_valid(number):
    assert errors_of(company_number=number) == {}


@pytest.mark.parametrize(
    "number", ["1234567", "012345678", "sc123456", "S1234567", "SC12345X", "０１２３４５６７", 1234567]
)
def test_other_company_numbers_are_invalid(number):
    assert "company_number" in errors_of(company_number=number)


def test_company_name_may_have_255_characters():
    assert errors_of(company_name="x" * 255) == {}


@pytest.mark.parametrize("name", ["", "   ", "x" * 256, 42])
def test_company_name_must_have_1_to_255_characters(name):
    assert "company_name" in errors_of(company_name=name)


@pytest.mark.parametrize("email", ["a@b.co", "first.last+tag@sub.example.org", "x@bücher.example"])
def test_email_addresses_are_valid(email):
    assert errors_of(company_email=email) == {}


@pytest.mark.parametrize("email", ["", "no-at-sign", "a@b", "a@@b.co", "a b@c.co", "a@-b.co", ".a@b.co", 1])
def test_things_that_are_not_email_addresses_are_invalid(email):
    assert list(errors_of(company_email=email)) == ["company_email"]


def test_company_email_must_have_at_most_255_characters():
    address = "a" * 64 + "@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 70 + ".com"
    assert "company_email" in errors_of(company_email=address)


@pytest.mark.parametrize("status", ["YES", "ONE_TWO_YEARS_AGO", "OVER_TWO_YEARS_AGO", "NOT_YET", "NO_INTENTION"])
def test_each_export_status_is_valid(status):
    assert errors_of(export_status=status) == {}


@pytest.mark.parametrize("status", ["yes", "MAYBE", "", None])
def test_other_export_statuses_are_invalid(status):
    assert "export_status" in errors_of(export_status=status)


def test_date_of_creation_may_be_today():
    assert errors_of(date_of_creation=TODAY.isoformat()) == {}


def test_date_of_creation_must_not_be_in_the_future():
    assert errors_of(date_of_creation="2026-06-16") == {"date_of_creation": ["Must not be in the future."]}


@pytest.mark.parametrize("date", ["2010-3-1", "01/03/2010", "2010-02-30", "20100301", "2010-03-01T00:00:00", 2010])
def test_date_of_creation_must_be_a_calendar_date_as_yyyy_mm_dd(date):
    assert "date_of_creation" in errors_of(date_of_creation=date)


def test_date_of_creation_is_checked_against_the_real_date_by_default():
    tomorrow_everywhere = datetime.date.today() + datetime.timedelta(days=2)
    assert "date_of_creation" in validate(valid(date_of_creation=tomorrow_everywhere.isoformat()))


@pytest.mark.parametrize("field, limit", [("mobile_number", 20), ("referrer", 255)])
def test_optional_text_fields_have_a_maximum_length(field, limit):
    assert errors_of(**{field: "x" * limit}) == {}
    assert field in errors_of(**{field: "x" * (limit + 1)})


@pytest.mark.parametrize("field", ["mobile_number", "referrer"])
def test_optional_text_fields_must_be_strings_when_given(field):
    assert field in errors_of(**{field: None})


@pytest.mark.parametrize("revenue", ["0", "125000", "125000.5", "125000.50", "-3.10", "999999999999999.99", "0001.500"])
def test_revenue_that_fits_decimal_17_2_is_valid(revenue):
    assert errors_of(revenue=revenue) == {}


def test_revenue_with_16_digits_before_the_point_is_invalid():
    assert errors_of(revenue="1000000000000000") == {
        "revenue": ["Ensure that there are no more than 15 digits before the decimal point."]
    }


def test_revenue_with_3_decimal_places_is_invalid():
    assert errors_of(revenue="1.005") == {"revenue": ["Ensure that there are no more than 2 decimal places."]}


@pytest.mark.parametrize("revenue", [125000, 1.5, "", ".", "1e5", "NaN", "Infinity", "1,000", " 12", "12 "])
def test_revenue_must_be_a_decimal_number_as_a_string(revenue):
    assert "revenue" in errors_of(revenue=revenue)


@pytest.mark.parametrize("value", ["Acme\x00", "Acme\ud800"])
def test_text_that_postgresql_cannot_store_is_invalid(value):
    assert errors_of(company_name=value) == {"company_name": ["Must not contain NUL or unpaired surrogate characters."]}


def test_an_extra_field_that_postgresql_cannot_store_is_invalid():
    expected = {"notes": ["Must not contain NUL or unpaired surrogate characters."]}
    assert errors_of(notes={"list": ["ok", "\x00"]}) == expected


def test_a_field_name_that_postgresql_cannot_store_is_a_non_field_error():
    assert list(errors_of(**{"bad\x00name": 1})) == [NON_FIELD_ERRORS]


def test_every_invalid_field_is_reported_at_once():
    assert set(errors_of(sso_id=0, company_number="x", revenue="x")) == {"sso_id", "company_number", "revenue"}


def test_parse_returns_the_json_document():
    assert parse(b'{"a": [1, "\xc3\xa9"]}') == {"a": [1, "é"]}


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"\xff{}", "not UTF-8"),
        (b"{", "not JSON"),
        (b"", "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 100 levels"),
    ],
)
def test_parse_refuses_what_is_not_utf8_json(body, reason):
    with pytest.raises(BodyError, match=reason):
        parse(body)


# Deep nesting and characters SQS cannot carry (issue 10, items 4 and 5)


def nested(levels: int) -> bytes:
    """An enrolment-like object whose `extra` field holds arrays `levels` deep in all."""
    return b'{"extra": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


def test_json_nested_100_levels_is_parsed():
    assert parse(nested(MAX_DEPTH))["extra"]


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 400, 970, 100_000])
def test_json_nested_deeper_than_100_levels_is_refused_before_it_is_built(levels):
    with pytest.raises(BodyError, match="nested deeper than 100 levels"):
        parse(nested(levels))


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = '{"a": "' + "[{" * 200 + '", "b": "\\\"[[[[", "c": ["]]]]"]}'

    assert not too_deep(text)
    assert parse(text.encode())["c"] == ["]]]]"]


def test_an_unterminated_string_is_not_deep():
    assert not too_deep('["' + "[" * 500)


def test_nesting_counts_arrays_and_objects_alike():
    assert too_deep('{"a": ' * 51 + "[" * 50)
    assert not too_deep('{"a": ' * 50 + "[" * 50)


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x08", "\x1f", "\ufffe", "\uffff"])
def test_a_character_sqs_cannot_carry_is_refused_naming_it(character):
    body = f'{{"company_name": "Acme{character}"}}'.encode()

    with pytest.raises(BodyError, match=f"cannot carry: U\\+{ord(character):04X} \\(character 22\\)"):
        parse(body)


@pytest.mark.parametrize("character", [" ", "\x7f", "\ud7ff", "\ue000", "\ufffd", "\U0001f600", "\U0010ffff"])
def test_every_character_sqs_carries_is_accepted(character):
    assert parse(f'{{"a": "{character}"}}'.encode()) == {"a": character}


def test_tab_newline_and_carriage_return_are_accepted_between_tokens():
    assert parse(b'{\t"a":\r\n1}') == {"a": 1}


def test_a_json_escape_of_a_character_sqs_cannot_carry_is_accepted():
    # SQS sees the raw body, where the escape is six ASCII characters.
    assert parse(b'{"a": "\\u0001"}') == {"a": "\x01"}


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" * 4301, "-" + "1" * 4301])
def test_a_number_python_cannot_read_or_jsonb_cannot_hold_is_refused(number):
    with pytest.raises(BodyError, match="The body is not JSON this service accepts: .*number"):
        parse(f'{{"extra": {number}}}'.encode())


def test_numbers_within_bounds_are_read():
    assert parse(('{"a": 1e300, "b": -' + "9" * 4300 + "}").encode())["a"] == 1e300
