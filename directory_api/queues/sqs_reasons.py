"""Why an SQS queue cannot be used, in one line an operator can act on: no credentials, refused, missing, unreachable.

serve logs it at start and /healthcheck/ when the queue does not answer, and
`check` prints it: "get or create failed: 403" or "Unable to locate
credentials" alone does not say what to change. botocore is imported only
once an error of its own is in hand, so the database backend never loads it.
"""

import re

# The codes with which AWS refuses the credentials themselves (rather than what they may do).
CREDENTIALS_REFUSED = frozenset({
    "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "IncompleteSignature",
    "InvalidAccessKeyId", "ExpiredToken", "ExpiredTokenException", "MissingAuthenticationToken",
    "InvalidSecurity", "RequestExpired", "AuthFailure",
})
ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "KMS.AccessDeniedException"})
DELETED_RECENTLY = frozenset({"AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently"})
# moto (and some SQS-compatible servers) answer an IAM refusal as code "403" with the real code in an XML body.
XML_CODE = re.compile(r"<Code>([^<]+)</Code>")

NO_CREDENTIALS = (
    "no AWS credentials found: give the machine an IAM role (instance profile or task role), or set "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the service's environment"
)
POLICY = "docs/production.md has the IAM policy"


def why_unusable(error: BaseException, queue_name: str) -> str:
    """One line saying why the queue cannot be used, from the error (or the botocore error it was raised from)."""
    cause = _botocore_cause(error)
    if cause is None:
        return str(error)
    import botocore.exceptions

    if isinstance(cause, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        return NO_CREDENTIALS
    if isinstance(cause, botocore.exceptions.ClientError):
        return _refused(cause, queue_name)
    if isinstance(cause, (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.EndpointConnectionError)):
        return (f"the SQS endpoint cannot be reached ({cause}): check SQS_REGION_NAME, SQS_ENDPOINT_URL, "
                "DNS, and that outbound HTTPS to it is allowed (a VPC endpoint or a NAT)")
    if isinstance(cause, botocore.exceptions.ReadTimeoutError):
        return f"the SQS endpoint did not answer in time ({cause})"
    return f"{error} ({type(cause).__name__})"


def _botocore_cause(error: BaseException) -> BaseException | None:
    seen: BaseException | None = error
    while seen is not None:
        if type(seen).__module__.startswith("botocore"):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _refused(error, queue_name: str) -> str:
    details = error.response.get("Error", {})
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    # SQS's JSON protocol gives two codes (the query protocol's and its own); look at both, show the first.
    codes = [str(details[key]) for key in ("Code", "QueryErrorCode") if details.get(key)]
    codes += XML_CODE.findall(str(details.get("Message") or ""))
    code = next((code for code in codes if not code.isdigit()), str(status))
    operation = error.operation_name
    if CREDENTIALS_REFUSED.intersection(codes):
        return (f"the AWS credentials were refused ({code}): check the access key and secret (or the role), "
                "and that this machine's clock is right")
    if DELETED_RECENTLY.intersection(codes):
        return f"queue {queue_name} was deleted less than 60 s ago: SQS lets it be created again after that"
    if ACCESS_DENIED.intersection(codes) or status == 403 or "403" in codes:
        if operation == "CreateQueue":
            return (f"queue {queue_name} does not exist and these credentials may not create it "
                    f"(sqs:CreateQueue denied): create it, or allow sqs:CreateQueue ({POLICY})")
        return f"access denied to queue {queue_name} (sqs:{operation}): allow it in the IAM policy ({POLICY})"
    return f"SQS refused {operation} on queue {queue_name}: {code}"
