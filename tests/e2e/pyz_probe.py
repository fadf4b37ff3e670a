"""Run inside the built pyz (SHIV_INTERPRETER=1): every SQS call the service makes, with the pyz's own packages.

Prints one JSON object: the SQS operations sent (as botocore names them), whether
the enrolment calls went direct, what each queue method gave back, and how the
credentials were found. The queue
settings come from the environment (SQS_ENDPOINT_URL, SQS_REGION_NAME); the
credentials from boto3's chain, as in production.
"""

import json
import os
import sys

import botocore

from directory_api.queues import Message, sqs
from directory_api.settings import Settings

settings = Settings.from_environ({**os.environ, "QUEUE_BACKEND": "sqs", "SQS_VISIBILITY_TIMEOUT": "30"}, require=())
called = []
queue = sqs.SqsQueue(settings, sys.argv[1])
# before-send: what boto3 sends and what the enrolment calls send directly (sqs_direct.py) both pass it.
queue.client.meta.events.register(
    "before-send.sqs", lambda event_name, **kwargs: called.append(event_name.split(".")[2]))

queue.ensure_exists()  # missing: GetQueueUrl, then CreateQueue
again = sqs.SqsQueue(settings, sys.argv[1], client=queue.client)
again.ensure_exists()  # there now: GetQueueUrl alone
size_limit = queue.message_size_limit()  # GetQueueAttributes
sent = queue.send('{"n": 0}', {"original_message_id": "probe"})
sent_batch = queue.send_batch([json.dumps({"n": n}) for n in range(1, 13)])  # two batches of at most 10
received: list[Message] = []
while len(received) < 13:
    batch = queue.receive(10, 1)
    assert batch, f"received {len(received)} of 13"
    received += batch
first = next(message for message in received if message.id == sent)
queue.extend(first, 60)
queue.release([message for message in received if message is not first])
back: list[Message] = []
while len(back) < 12:
    back += queue.receive(10, 1)
not_deleted = queue.delete([first, *back])
left = queue.receive(10, 1)

credentials = queue.client.boto3_client._request_signer._credentials  # what the client signs with: no public accessor
print(json.dumps({
    "operations": sorted({botocore.xform_name(name) for name in called}),
    "direct": queue.client.direct,
    "size_limit": size_limit,
    "sent": bool(sent) and all(sent_batch) and len(sent_batch) == 12,
    "attributes": first.attributes,
    "received": len(received),
    "back_after_release": len(back),
    "not_deleted": len(not_deleted),
    "left": len(left),
    "credentials": credentials.method,
    "access_key": credentials.get_frozen_credentials().access_key,
}))
