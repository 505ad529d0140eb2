"""API keys: read from env or file, fail closed, compared in constant time, several at once."""

import pytest

from rayline.config import ServeAuthConfig, ServeConfig
from rayline.errors import ConfigError
from rayline.serve.auth import authorized, client_headers, load_api_keys

KEY, OLD = "k" * 20 + "new", "o" * 20 + "old"


def test_off_by_default_and_open_when_off():
    auth = ServeAuthConfig()
    assert not auth.enabled and load_api_keys(auth) == () and authorized(None, ()) and client_headers(auth) == {}


def test_keys_from_env_and_file_for_rotation(tmp_path):
    f = tmp_path / "keys"
    f.write_text(f"{OLD}\n\n{KEY}\n")
    keys = load_api_keys(ServeAuthConfig(api_key_env="API_KEY", api_key_file=str(f)), {"API_KEY": "e" * 32})
    assert keys == (b"e" * 32, OLD.encode(), KEY.encode())
    for k in (KEY, OLD, "e" * 32):
        assert authorized(f"Bearer {k}", keys) and authorized(f"bearer  {k} ", keys)
    assert client_headers(ServeAuthConfig(api_key_file=str(f))) == {"authorization": f"Bearer {OLD}"}


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Basic {KEY}", f"Bearer {KEY[:-1]}",
                                    f"Bearer {KEY}x", f"Token {KEY}", KEY, "Bearer \udcff\udcfe"])
def test_anything_but_a_valid_bearer_key_is_refused(header):
    assert not authorized(header, (KEY.encode(),))


def test_configured_but_missing_or_weak_keys_fail_closed(tmp_path):
    with pytest.raises(ConfigError, match="environment variable API_KEY is not set or empty"):
        load_api_keys(ServeAuthConfig(api_key_env="API_KEY"), {})
    with pytest.raises(ConfigError, match="cannot read .*nope"):
        load_api_keys(ServeAuthConfig(api_key_file=str(tmp_path / "nope")))
    (tmp_path / "empty").write_text("\n \n")
    with pytest.raises(ConfigError, match="holds no key"):
        load_api_keys(ServeAuthConfig(api_key_file=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="shorter than 16 characters"):
        load_api_keys(ServeAuthConfig(api_key_env="API_KEY"), {"API_KEY": "hunter2"})


def test_an_endpoint_beyond_loopback_requires_keys_or_an_explicit_opt_out():
    with pytest.raises(ValueError, match="host 0.0.0.0 exposes the endpoint beyond this machine"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", auth={"api_key_env": "K"}).auth.enabled
    assert ServeConfig(host="10.1.2.3", auth={"allow_unauthenticated": True}).host == "10.1.2.3"
    assert ServeConfig(host="127.0.0.1").host == ServeConfig(host="localhost").host.replace("localhost", "127.0.0.1")
    with pytest.raises(ValueError):
        ServeConfig(auth={"api_key_env": "not a name"})
