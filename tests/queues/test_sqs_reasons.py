"""sqs_reasons: why an SQS queue cannot be used, as one line saying what to change."""

import botocore.exceptions

from directory_api.queues import QueueUnavailable
from directory_api.queues.sqs_reasons import NO_CREDENTIALS, why_unusable


def raised_from(cause: Exception) -> QueueUnavailable:
    """A QueueUnavailable raised from `cause`, as sqs.unavailable_on_error raises it."""
    try:
        try:
            raise cause
        except Exception as error:
            raise QueueUnavailable("SQS queue enrolment: get or create failed") from error
    except QueueUnavailable as unavailable:
        return unavailable


def client_error(operation: str, status: int, **error: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def test_no_credentials_says_where_credentials_come_from():
    assert why_unusable(raised_from(botocore.exceptions.NoCredentialsError()), "enrolment") == NO_CREDENTIALS


def test_refused_credentials_name_the_code_under_either_of_sqs_json_codes():
    error = client_error("GetQueueUrl", 403, Code="InvalidClientTokenId", QueryErrorCode="UnrecognizedClientException")

    assert why_unusable(raised_from(error), "enrolment").startswith(
        "the AWS credentials were refused (InvalidClientTokenId)")


def test_create_queue_denied_says_the_queue_is_missing_and_may_not_be_created():
    error = client_error("CreateQueue", 400, Code="AccessDenied", QueryErrorCode="AccessDeniedException")

    assert why_unusable(raised_from(error), "enrolment").startswith(
        "queue enrolment does not exist and these credentials may not create it (sqs:CreateQueue denied)")


def test_a_403_with_the_code_in_an_xml_body_is_read_as_that_code():
    # moto, and some SQS-compatible servers, answer an IAM refusal so.
    body = "<ErrorResponse><Errors><Error><Code>AccessDenied</Code></Error></Errors></ErrorResponse>"
    error = client_error("GetQueueUrl", 403, Code="403", Message=body)

    assert why_unusable(raised_from(error), "enrolment").startswith(
        "access denied to queue enrolment (sqs:GetQueueUrl): allow it in the IAM policy")


def test_an_unreachable_endpoint_says_what_to_check():
    error = botocore.exceptions.EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/")

    line = why_unusable(raised_from(error), "enrolment")

    assert line.startswith("the SQS endpoint cannot be reached (")
    assert "SQS_REGION_NAME, SQS_ENDPOINT_URL" in line


def test_an_error_not_of_botocore_is_its_own_message():
    assert why_unusable(QueueUnavailable("queue enrolment: database down"), "enrolment") == (
        "queue enrolment: database down")
