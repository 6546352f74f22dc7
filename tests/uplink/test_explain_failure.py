"""What the technician reads for a failed connection, whichever way OpenSSL reports it.

The live tests (test_tls_v5.py) see what this machine's OpenSSL says; these pin both forms seen in
the field: the broker's TLS alert (OpenSSL 3.0.11) and a bare EOF before CONNACK (OpenSSL 3.0.19).
"""

from __future__ import annotations

import pytest

from gateway.uplink.mqtt import explain_failure

ALERT_UNKNOWN_CA = (
    "failed to receive on socket: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)"
)
ALERT_REQUIRED = (
    "failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"
)
EOF_BEFORE_CONNACK = (
    "connection ended before CONNACK: failed to receive on socket: EOF occurred in violation of protocol "
    "(_ssl.c:2427)"
)


@pytest.mark.parametrize(
    ("raw", "tls", "client_cert", "words"),
    [
        (ALERT_UNKNOWN_CA, True, True, "refused the TLS client certificate"),
        (ALERT_REQUIRED, True, False, "requires a TLS client certificate and got none"),
        (EOF_BEFORE_CONNACK, True, True, "probably refused the TLS client certificate"),
        (EOF_BEFORE_CONNACK, True, False, "probably requires a TLS client certificate"),
    ],
)
def test_a_refused_client_certificate_is_said_in_words(
    raw: str, tls: bool, client_cert: bool, words: str
) -> None:
    explained = explain_failure(raw, tls=tls, client_cert=client_cert)
    assert words in explained
    assert explained.endswith(raw), "the raw text stays for whoever reads further"


def test_an_eof_without_tls_or_after_connack_is_not_blamed_on_certificates() -> None:
    assert explain_failure(EOF_BEFORE_CONNACK, tls=False) == EOF_BEFORE_CONNACK
    after = "failed to receive on socket: EOF occurred in violation of protocol"
    assert explain_failure(after, tls=True, client_cert=True) == after
