"""Gateway settings as `logitrec serve` checks them before starting: what it refuses and why."""

import re

import pytest

from logitrec.errors import InputError
from serving.config import Exposure, exposure, exposure_warnings, load_config, rerank_defaults


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


@pytest.mark.parametrize(
    ("settings", "authenticating", "expected"),
    [
        ({}, False, Exposure(admin=True, reflection=True, metrics=True)),  # loopback, dev
        ({}, True, Exposure(admin=True, reflection=False, metrics=False)),
        ({"host": "0.0.0.0", "insecure": True}, False,
         Exposure(admin=False, reflection=True, metrics=True)),
        ({"reflection": True, "metrics": True}, True,
         Exposure(admin=True, reflection=True, metrics=True)),
        ({"admin": False, "metrics": False}, False,
         Exposure(admin=False, reflection=True, metrics=False)),
    ],
)  # fmt: skip
def test_what_is_exposed_by_default_follows_authentication(
    tmp_path, settings, authenticating, expected
):
    config = load_config(None, {"repository": tmp_path, **settings})
    assert exposure(config, authenticating) == expected


def test_a_network_port_without_tls_or_tokens_is_announced_loudly(tmp_path):
    config = load_config(None, {"repository": tmp_path, "host": "0.0.0.0", "insecure": True,
                                "admin": True})  # fmt: skip
    warnings = exposure_warnings(config, exposure(config, False), authenticating=False)
    assert len(warnings) == 3 and warnings[0].startswith("PLAINTEXT on 0.0.0.0")
    assert any("admin service" in w for w in warnings)
    loopback = load_config(None, {"repository": tmp_path})
    assert exposure_warnings(loopback, exposure(loopback, False), authenticating=False) == []


def test_plaintext_on_a_network_address_is_refused_without_insecure(tmp_path):
    with pytest.raises(InputError, match="--insecure"):
        load_config(None, {"repository": tmp_path, "host": "0.0.0.0"})
    with pytest.raises(InputError, match="--tls-key"):
        load_config(None, {"repository": tmp_path, "tls_cert": tmp_path})


def rerank_config(tmp_path, table: str):
    path = tmp_path / "serve.toml"
    path.write_text(f'[serve]\nrepository = "{tmp_path}"\n{table}')
    return load_config(path)


def test_rerank_defaults_apply_to_every_model_and_per_model_tables_override_them(tmp_path):
    config = rerank_config(
        tmp_path,
        "[serve.rerank]\npopularity_beta = 0.5\n[serve.rerank.ml1m]\nmmr_lambda = 0.7\n",
    )
    assert rerank_defaults(config.rerank, "ml1m") == {"popularity_beta": 0.5, "mmr_lambda": 0.7}
    assert rerank_defaults(config.rerank, "other") == {"popularity_beta": 0.5}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[serve.rerank]\nbeta = 0.5\n", "[serve.rerank]: unknown setting(s) beta"),
        ("[serve.rerank.ml1m]\nmmr_lambda = 3\n", "[serve.rerank.ml1m]: mmr_lambda"),
        ("[serve.rerank]\ncategory_cap = -1\n", "[serve.rerank]: category_cap"),
    ],
)
def test_bad_rerank_defaults_are_refused_naming_the_table_and_setting(tmp_path, table, message):
    with pytest.raises(InputError, match=re.escape(message)):
        rerank_config(tmp_path, table)
