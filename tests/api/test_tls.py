"""A TLS pair that cannot be served is refused with the setting, its file, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.tls import CertificateError, Certificates
from nodes.clock import Clock
from tests.support import certificate


def refusal(cert: Path, key: Path) -> str:
    with pytest.raises(CertificateError) as failure:
        Certificates(str(cert), str(key), Clock())
    return str(failure.value)


def test_a_missing_key_file_is_named_with_its_path(tmp_path: Path) -> None:
    cert, _ = certificate(tmp_path, "a")
    missing = tmp_path / "gone.key"
    assert refusal(cert, missing) == f"FRPA_TLS_KEY_FILE {missing}: No such file or directory"


def test_a_file_that_is_no_certificate_is_named_as_such(tmp_path: Path) -> None:
    _, key = certificate(tmp_path, "a")
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    assert refusal(garbage, key) == f"FRPA_TLS_CERT_FILE {garbage}: not a PEM certificate"


def test_a_file_that_is_no_key_is_named_as_such(tmp_path: Path) -> None:
    cert, _ = certificate(tmp_path, "a")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    assert refusal(cert, garbage) == f"FRPA_TLS_KEY_FILE {garbage}: not a PEM private key"


def test_a_key_of_another_certificate_is_named_as_not_the_certificates(tmp_path: Path) -> None:
    cert, _ = certificate(tmp_path, "a")
    _, other_key = certificate(tmp_path, "b")
    assert refusal(cert, other_key) == (
        f"FRPA_TLS_KEY_FILE {other_key}: not the key of the certificate in "
        f"FRPA_TLS_CERT_FILE {cert}"
    )
