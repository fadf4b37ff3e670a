"""The single-process floor: the least a signed-enrolment endpoint must do, as one bare WSGI function.

Check the Hawk signature with mohawk (nonces in a dict), parse the JSON, send
it with boto3's send_message, answer 202 with the message id; on waitress, one
process. `serve` is measured against this in the same run (bench_serve.py).
It validates no fields, which only flatters the floor.

Run: UI_SECRET=not-a-real-secret SQS_ENDPOINT_URL=http://127.0.0.1:9324 \\
     python scripts/floor_app.py --port 8001 --queue enrolment
"""

import argparse
import json
import os
import threading

import boto3
import waitress
from mohawk import Receiver
from mohawk.exc import HawkFail

MAX_BODY = 256 * 1024


def make_app(secret: str, endpoint: str, queue_name: str):
    client = boto3.client("sqs", endpoint_url=endpoint, region_name="eu-west-1")
    queue_url = client.create_queue(QueueName=queue_name)["QueueUrl"]
    seen_nonce = _nonce_memory()

    def credentials(sender_id):
        return {"id": sender_id, "key": secret, "algorithm": "sha256"}

    def app(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_BODY:
            return _answer(start_response, "413 Payload Too Large", {"detail": "too large"})
        body = environ["wsgi.input"].read(length)
        try:
            Receiver(credentials, environ.get("HTTP_X_SIGNATURE", ""), _signed_path(environ), environ["REQUEST_METHOD"],
                     content=body, content_type=environ.get("CONTENT_TYPE") or "text/plain", seen_nonce=seen_nonce)
        except HawkFail as error:
            return _answer(start_response, "401 Unauthorized", {"detail": str(error)})
        problem = _json_problem(body)
        if problem:
            return _answer(start_response, "400 Bad Request", {"detail": problem})
        sent = client.send_message(QueueUrl=queue_url, MessageBody=body.decode())
        return _answer(start_response, "202 Accepted", {"id": sent["MessageId"], "status": "queued"})

    return app


def _nonce_memory():
    """mohawk's seen_nonce over a set in memory: True for a nonce seen before, which it then refuses."""
    seen: set[tuple[str, str, str]] = set()
    lock = threading.Lock()

    def seen_nonce(sender_id, nonce, timestamp):
        with lock:
            if (sender_id, nonce, timestamp) in seen:
                return True
            seen.add((sender_id, nonce, timestamp))
            return False

    return seen_nonce


def _signed_path(environ) -> str:
    """The path and query the client signed."""
    path = environ.get("PATH_INFO", "/")
    if environ.get("QUERY_STRING"):
        path += "?" + environ["QUERY_STRING"]
    return path


def _json_problem(body: bytes) -> str | None:
    """Why `body` is not a JSON object, or None when it is one."""
    try:
        payload = json.loads(body)
    except ValueError:
        return "not JSON"
    return None if isinstance(payload, dict) else "not an object"


def _answer(start_response, status: str, document: dict):
    body = json.dumps(document).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue", default="enrolment")
    parser.add_argument("--threads", type=int, default=4, help="waitress threads (its default)")
    arguments = parser.parse_args()
    app = make_app(os.environ["UI_SECRET"], os.environ["SQS_ENDPOINT_URL"], arguments.queue)
    # waitress stops accepting at 100 connections by default: at 256 most clients would wait in the backlog.
    waitress.serve(app, host="127.0.0.1", port=arguments.port, threads=arguments.threads, connection_limit=1000,
                   _quiet=True)


if __name__ == "__main__":
    main()
