"""Gateway settings as `logitrec serve` checks them before starting: what it refuses and why."""

import pytest

from logitrec.errors import InputError
from serving.config import load_config


def triton_settings(repository, url, **more):
    return {"repository": repository, "backend": "triton", "triton_url": url, **more}


def test_a_remote_triton_in_plaintext_is_refused_naming_triton_tls(tmp_path):
    with pytest.raises(InputError) as refused:
        load_config(None, triton_settings(tmp_path, "10.0.0.5:8001"))
    message = str(refused.value)
    assert message.startswith("--triton-url 10.0.0.5:8001:") and "--triton-tls" in message


def test_a_remote_triton_is_accepted_with_tls_or_insecure(tmp_path):
    tls = load_config(None, triton_settings(tmp_path, "10.0.0.5:8001", triton_tls=True))
    assert tls.triton_tls
    plaintext = load_config(None, triton_settings(tmp_path, "10.0.0.5:8001", insecure=True))
    assert plaintext.triton_url == "10.0.0.5:8001" and not plaintext.triton_tls


@pytest.mark.parametrize("url", ["127.0.0.1:8001", "localhost:8001", "[::1]:8001"])
def test_a_triton_on_this_machine_needs_no_tls(tmp_path, url):
    assert load_config(None, triton_settings(tmp_path, url)).triton_url == url
