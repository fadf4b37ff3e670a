"""A real SMTP server for the e-mail tests (scripts/smtp_sink.py's aiosmtpd handler) and a self-signed certificate."""

import datetime
import email
import email.policy
import ipaddress
from pathlib import Path

import smtp_sink
from aiosmtpd.controller import Controller

from tests.support.sockets import free_port


class SmtpServer:
    """An aiosmtpd server in this process on 127.0.0.1; `sink.mode` may change while it runs."""

    def __init__(self, port: int | None = None, **options):
        self.port = port or free_port()
        self.sink = smtp_sink.Sink()
        self.options = options
        self._controller: Controller | None = None

    def start(self) -> "SmtpServer":
        self._controller = smtp_sink.controller(self.sink, self.port, **self.options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return [parse(record["data"]) for record in self.sink.messages]


def parse(data: str) -> email.message.EmailMessage:
    return email.message_from_string(data, policy=email.policy.default)


def parts(message: email.message.EmailMessage) -> dict[str, str]:
    """content type -> decoded text of each leaf part."""
    return {part.get_content_type(): part.get_content() for part in message.walk() if not part.is_multipart()}


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
