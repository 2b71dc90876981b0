from __future__ import annotations

from pathlib import Path

import pytest

from preforkd import config
from preforkd.config import FIELDS, ConfigError


def test_defaults():
    cfg = config.load()
    assert cfg.bind == ("127.0.0.1:8000",)
    assert cfg.workers >= 1
    assert cfg.worker_connections >= 10000
    assert cfg.signals == "default"


def test_file_then_command_line(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('workers = 3\nbind = ["127.0.0.1:9000", "unix:/tmp/x.sock"]\ntimeout = 5\n')
    cfg = config.load(str(p))
    assert (cfg.workers, cfg.bind, cfg.timeout) == (3, ("127.0.0.1:9000", "unix:/tmp/x.sock"), 5.0)
    cfg = config.load(str(p), {"workers": "7"})
    assert cfg.workers == 7 and cfg.timeout == 5.0
    assert cfg.config_path == str(p)


@pytest.mark.parametrize("text,message", [
    ("workers = -3", 'workers: expected a positive integer (up to 512) or "auto", got -3'),
    ("workers = true", "workers: expected a positive integer"),
    ('workers = "many"', "got 'many'"),
    ("timeout = 0", "timeout: expected a number of seconds > 0, got 0"),
    ('log_level = "loud"', 'log_level: expected one of "debug", "info"'),
    ('signals = "bsd"', 'signals: expected one of "default", "nginx", got \'bsd\''),
    ('bind = "localhost"', 'bind: expected "host:port"'),
    ('bind = "127.0.0.1:99999"', "bind: expected a port from 0 to 65535"),
    ("bind = []", "bind: no address to listen on"),
    ("bind = [1]", "bind: expected an address or a list of addresses"),
    ('unix_socket_mode = "rw"', 'unix_socket_mode: expected an octal file mode'),
    ('app = "nocolon"', 'app: expected "module:callable"'),
    ("worker_connections = 0", "worker_connections: expected an integer >= 1, got 0"),
    ("graceful_timeout = -1", "graceful_timeout: expected a number of seconds >= 0"),
    ('proxy_protocol = "v3"', 'proxy_protocol: expected one of "off", "v1", "v2", "auto"'),
    ('proxy_allow_ips = ["10.0.0.0/33"]', "proxy_allow_ips: expected a list of addresses"),
    ('[[listener]]\nproxy_protocol = "v2"', "listener: expected [[listener]] tables with bind"),
    ('[[listener]]\nbind = "x:1"\nproxy_protocol = "v9"', "listener: expected [[listener]]"),
    ('[[listener]]\nbind = "127.0.0.1:1"\nbacklog = 5', "listener: expected [[listener]]"),
])
def test_file_errors_name_file_key_value_and_expectation(tmp_path, text, message):
    p = tmp_path / "c.toml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        config.load(str(p))
    assert str(e.value).startswith(f"{p}: ")
    assert message in str(e.value)


def test_unknown_key_suggests(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("graceful_timout = 3\n")
    with pytest.raises(ConfigError, match='unknown key "graceful_timout" '
                                          r'\(did you mean "graceful_timeout"\?\)'):
        config.load(str(p))
    p.write_text("zzz = 3\n")
    with pytest.raises(ConfigError, match=r'unknown key "zzz"$'):
        config.load(str(p))


def test_command_line_errors_name_the_flag():
    with pytest.raises(ConfigError, match="^--worker-connections: expected an integer >= 1"):
        config.load("", {"worker_connections": "none"})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "nope.toml"))
    p = tmp_path / "bad.toml"
    p.write_text("workers = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(str(p))


def test_workers_auto_is_usable_cpus():
    import os

    assert config.load("", {"workers": "auto"}).workers == len(os.sched_getaffinity(0))


def test_describe_round_trips(tmp_path):
    cfg = config.load("", {"workers": "3", "bind": ("unix:/tmp/a b.sock",), "daemon": True})
    p = tmp_path / "printed.toml"
    p.write_text(cfg.describe())
    again = config.load(str(p))
    assert again.replace(config_path="") == cfg


def test_listener_tables_add_addresses_with_their_own_proxy_options(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('proxy_allow_ips = ["10.0.0.0/8"]\n'
                 '[[listener]]\nbind = "127.0.0.1:8443"\nproxy_protocol = "v2"\n'
                 '[[listener]]\nbind = "unix:/tmp/p.sock"\nproxy_protocol = "v1"\n'
                 'proxy_allow_ips = ["unix"]\n')
    cfg = config.load(str(p))
    assert cfg.binds == ("127.0.0.1:8443", "unix:/tmp/p.sock")  # tables alone: no default
    assert cfg.proxy_for("127.0.0.1:8443", "") == ("v2", ("10.0.0.0/8",))
    assert cfg.proxy_for("fd://3", "unix:/tmp/p.sock") == ("v1", ("unix",))  # (inherited)
    assert cfg.proxy_for("127.0.0.1:9", "127.0.0.1:9") == ("off", ("10.0.0.0/8",))
    cli = config.load(str(p), {"bind": ("127.0.0.1:8443", "127.0.0.1:80")})
    assert cli.binds == ("127.0.0.1:8443", "127.0.0.1:80", "unix:/tmp/p.sock")  # (no twice)
    printed = tmp_path / "printed.toml"
    printed.write_text(cfg.describe())
    assert config.load(str(printed)).replace(config_path="") == cfg.replace(config_path="")


def test_shipped_config_lists_every_key_with_its_default():
    import tomllib
    from pathlib import Path

    shipped = Path(__file__).parents[2] / "conf" / "preforkd.toml"
    text = shipped.read_text()
    for f in FIELDS:
        assert f"# {f.key} = " in text or f"\n{f.key} = " in text, f.key
    # the commented-out defaults, uncommented, are the built-in defaults
    lines = [ln[2:] for ln in text.splitlines() if ln.startswith("# ") and " = " in ln
             and ln[2:].split(" = ")[0] in config.FIELDS_BY_KEY]
    values = tomllib.loads("\n".join(lines))
    defaults = config.load()
    for key, value in values.items():
        if key != "workers":
            assert config.FIELDS_BY_KEY[key].parse(value) == getattr(defaults, key), key


def test_control_path_sits_beside_the_pid_file():
    assert config.control_path_for("/run/preforkd.pid") == "/run/preforkd.ctl"
    assert config.control_path_for("/run/pf") == "/run/pf.ctl"


def test_the_annotated_config_shows_every_key():
    text = (Path(__file__).parents[2] / "conf" / "preforkd.toml").read_text()
    missing = [f.key for f in FIELDS if f"# {f.key} = " not in text]
    assert not missing, f"conf/preforkd.toml does not show {missing}"


def test_static_tables(tmp_path, monkeypatch):
    p = tmp_path / "c.toml"
    p.write_text('[[static]]\nprefix = "/static"\nroot = "public"\nmax_age = 60\n'
                 '[[static]]\nprefix = "/"\nroot = "/srv/site"\nindex = ""\n'
                 'precompressed = true\nfollow_symlinks = true\nfallthrough = true\n')
    monkeypatch.chdir("/")  # a relative root is the config file's neighbour, not the cwd's
    a, b = config.load(str(p)).static
    assert a == config.StaticTable("/static/", str(tmp_path / "public"), "index.html", 60,
                                   False, False, False)
    assert b == config.StaticTable("/", "/srv/site", "", None, True, True, True)
    printed = tmp_path / "printed.toml"
    printed.write_text(config.load(str(p)).describe())
    assert config.load(str(printed)).static == (a, b)
    monkeypatch.chdir(tmp_path)  # without a file: the cwd's
    assert config.load(overrides={"static": [{"prefix": "/s/", "root": "r"}]}).static[0].root \
        == str(tmp_path / "r")


@pytest.mark.parametrize("table,message", [
    ('root = "p"', "static[0].prefix: expected a value (the key is required)"),
    ('prefix = "/s/"', "static[0].root: expected a value"),
    ('prefix = "s/"\nroot = "p"', "static[0].prefix: expected a URL path starting with"),
    ('prefix = "/s/../x/"\nroot = "p"', "static[0].prefix: expected a URL path"),
    ('prefix = "/s%2f/"\nroot = "p"', "static[0].prefix: expected a URL path"),
    ('prefix = "/s/"\nroot = 5', "static[0].root: expected a directory"),
    ('prefix = "/s/"\nroot = "p"\nindex = "a/b.html"', "static[0].index: expected a file name"),
    ('prefix = "/s/"\nroot = "p"\nmax_age = -1', "static[0].max_age: expected an integer >= 0"),
    ('prefix = "/s/"\nroot = "p"\nprecompressed = "maybe"',
     "static[0].precompressed: expected true or false, got 'maybe'"),
    ('prefix = "/s/"\nroot = "p"\nfallthru = true',
     'static[0].fallthru: unknown key (did you mean "fallthrough"?)'),
    ('prefix = "/s/"\nroot = "p"\n[[static]]\nprefix = "/s"\nroot = "q"',
     "static[1].prefix: expected a prefix no other [[static]] table has, got '/s/'"),
])
def test_static_table_errors_name_the_table_and_the_key(tmp_path, table, message):
    p = tmp_path / "c.toml"
    p.write_text("[[static]]\n" + table + "\n")
    with pytest.raises(ConfigError) as e:
        config.load(str(p))
    assert str(e.value).startswith(f"{p}: {message}"), str(e.value)
