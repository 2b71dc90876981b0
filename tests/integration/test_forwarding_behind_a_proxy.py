"""Trusted forwarding against a real preforkd: the client connects from 127.0.0.1."""

from __future__ import annotations

import http.client
import json

CHAIN = {"X-Forwarded-For": "203.0.113.7, 10.0.0.1", "X-Forwarded-Proto": "https"}


def get(conn: http.client.HTTPConnection, headers: dict[str, str]) -> dict:
    conn.request("GET", "/", headers=headers)
    r = conn.getresponse()
    assert r.status == 200
    return json.loads(r.read())


def start(server, *args, config=None):
    srv = server("-w", "1", "--app", "forwardapp:app", *args, config=config)
    srv.wait_ready(1)
    return srv, http.client.HTTPConnection(*srv.address, timeout=10)


def test_loopback_is_trusted_by_default_but_not_the_hops_behind_it(server):
    srv, conn = start(server)
    env = get(conn, CHAIN)
    assert env["REMOTE_ADDR"] == "10.0.0.1" and env["REMOTE_PORT"] == ""
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["preforkd.peer"] == f"127.0.0.1:{conn.sock.getsockname()[1]}"
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7, 10.0.0.1"
    assert env["HTTP_HOST"] == f"127.0.0.1:{srv.address[1]}"  # forwarded_host is off
    conn.close()


def test_trusted_inner_network_from_the_config_file(server):
    srv, conn = start(server, config='forwarded_allow_ips = ["127.0.0.1", "10.0.0.0/8"]\n')
    env = get(conn, CHAIN)
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["wsgi.url_scheme"] == "https"
    conn.close()


def test_an_untrusted_peer_gets_its_fields_passed_through(server):
    srv, conn = start(server, "--forwarded-allow-ips", "192.0.2.1")
    env = get(conn, {**CHAIN, "Forwarded": "for=198.51.100.1;proto=https"})
    local_port = conn.sock.getsockname()[1]
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == str(local_port)
    assert env["wsgi.url_scheme"] == "http" and env["HTTPS"] is None
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7, 10.0.0.1"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"
    assert env["HTTP_FORWARDED"] == "for=198.51.100.1;proto=https"
    conn.close()


def test_keep_alive_requests_get_their_own_forwarding(server):
    srv, conn = start(server, "--forwarded-host")
    sent = [
        ({"X-Forwarded-For": "203.0.113.1"}, ("203.0.113.1", "http", None)),
        ({"X-Forwarded-For": "203.0.113.2", "X-Forwarded-Proto": "https",
          "X-Forwarded-Host": "www.example.com"}, ("203.0.113.2", "https", "www.example.com")),
        ({}, ("127.0.0.1", "http", None)),
        ({"X-Forwarded-For": "203.0.113.2", "X-Forwarded-Proto": "https"},
         ("203.0.113.2", "https", None)),
        ({"X-Forwarded-For": "203.0.113.2", "X-Forwarded-Proto": "https"},
         ("203.0.113.2", "https", None)),
        ({"Forwarded": 'for="[2001:db8::7]:4711";proto=https;host=shop.example',
          "X-Forwarded-For": "192.0.2.99"}, ("2001:db8::7", "https", "shop.example")),
        ({"X-Forwarded-For": "203.0.113.3"}, ("203.0.113.3", "http", None)),
        ({}, ("127.0.0.1", "http", None)),
    ]
    conn.connect()
    local = conn.sock.getsockname()
    for headers, (addr, scheme, host) in sent:
        env = get(conn, headers)
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == (addr, scheme), headers
        assert env["HTTPS"] == ("on" if scheme == "https" else None), headers
        if host is None:
            assert env["HTTP_HOST"] == f"127.0.0.1:{srv.address[1]}", headers
        else:
            assert env["HTTP_HOST"] == env["SERVER_NAME"] == host, headers
            assert env["SERVER_PORT"] == "443"
        if addr == "2001:db8::7":
            assert env["REMOTE_PORT"] == "4711"
    assert conn.sock.getsockname() == local  # all on one connection
    conn.close()


def test_a_bad_allow_list_is_refused_naming_the_key(server):
    import subprocess
    import sys

    from harness import env_for_server

    out = subprocess.run([sys.executable, "-m", "preforkd", "check",
                          "--forwarded-allow-ips", "10.0.0.0/33"],
                         capture_output=True, text=True, env=env_for_server())
    assert out.returncode != 0
    assert "--forwarded-allow-ips" in out.stderr and "10.0.0.0/33" in out.stderr
