"""The judging page's server as a careless or hostile client meets it (#27, item 4): each test is
one kind of failure that the standard-library server of 0.3 had."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from relcomp.annotate import Session, safe_text
from relcomp.cli import main
from test_annotate import _folder, _get, _post, _rows, _serve


@pytest.fixture
def served(tmp_path):
    imgs, comps = _folder(tmp_path, 6), tmp_path / "j.csv"
    session = Session(imgs, comps)
    server, url = _serve(session)
    yield session, url, comps, server.port
    server.stop()


def _raw(port: int, data: bytes, read: bool = True, timeout: float = 5.0) -> bytes:
    """Send bytes as they are and read the answer (no client library to tidy them up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return b""
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0


def test_a_valid_last_row_without_a_newline_is_kept_a_torn_one_cut(tmp_path):
    imgs = _folder(tmp_path, 6)
    comps = tmp_path / "j.csv"
    comps.write_text("a,b,outcome\ni0.png,sub/i1.png,>\ni2.png,sub/i3.png,<")  # no newline after a whole row
    session = Session(imgs, comps)
    assert session.log.count() == 2 and comps.read_text().endswith("i2.png,sub/i3.png,<\n")
    comps.write_text("a,b,outcome\ni0.png,sub/i1.png,>\ni2.png,sub/i")  # a row a kill cut short
    assert Session(imgs, comps).log.count() == 1 and comps.read_text() == "a,b,outcome\ni0.png,sub/i1.png,>\n"


@pytest.mark.parametrize("body", [[1], "x", 42, None, {"a": [1], "b": "i0.png", "outcome": ">"},
                                  {"a": "i0.png", "b": "i2.png", "outcome": [">"]},
                                  {"a": "i0.png", "b": "i2.png", "outcome": ">", "annotator": {"x": 1}},
                                  {"a": "i0.png", "b": "i2.png", "outcome": ">", "annotator": ["a"]},
                                  {"a": "i0.png", "b": "i2.png", "outcome": True}])
def test_a_body_of_the_wrong_shape_is_a_400_and_nothing_is_written(served, body):
    session, url, comps, _ = served
    status, answer = _post(url + "/api/judge", body)
    assert status == 400 and b"error" in answer and _rows(comps) == []
    assert _get(url + "/api/next")[0] == 200  # still serving


def test_deep_nesting_a_bad_length_and_a_short_body_are_refused(served):
    session, url, comps, port = served
    deep = b"[" * 60_000
    head = f"POST /api/judge HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nConnection: close\r\n"
    assert _status(_raw(port, (head + f"Content-Length: {len(deep)}\r\n\r\n").encode() + deep)) == 400
    assert _status(_raw(port, (head + "Content-Length: -1\r\n\r\n").encode())) == 400
    assert _status(_raw(port, (head + "Content-Length: 99999999\r\n\r\n").encode())) == 413
    chunked = head + "Transfer-Encoding: chunked\r\n\r\n" + "".join(f"{40000:x}\r\n{'x' * 40000}\r\n" for _ in range(3))
    assert _status(_raw(port, chunked.encode())) == 413
    body = json.dumps({"a": "i0.png", "b": "i2.png", "outcome": ">"}).encode()
    _raw(port, (head + f"Content-Length: {len(body) + 50}\r\n\r\n").encode() + body, read=False)  # then hang up
    time.sleep(0.3)
    assert _rows(comps) == [] and _get(url + "/api/next")[0] == 200


def test_text_for_the_csv_is_made_safe_for_spreadsheets(served):
    session, url, comps, _ = served
    assert _post(url + "/api/judge", {"a": "i0.png", "b": "i2.png", "outcome": ">",
                                      "annotator": '=HYPERLINK("http://evil.example","x")'})[0] == 200
    assert _rows(comps)[0]["annotator"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert safe_text("+1\n@x") == "'+1 @x" and safe_text("alice") == "alice" and len(safe_text("y" * 500)) == 100
    assert _post(url + "/api/judge", {"a": "i0.png", "b": "sub/i1.png", "outcome": ">", "annotator": "z" * 101})[0] == 400


def test_writes_from_another_site_are_refused(served):
    session, url, comps, port = served
    body = json.dumps({"a": "i0.png", "b": "i2.png", "outcome": ">"}).encode()

    def post(headers):
        head = f"POST /api/judge HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        return _status(_raw(port, (head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + body))

    assert post({"Content-Type": "application/json", "Origin": "http://evil.example"}) == 403
    assert post({"Content-Type": "text/plain", "Origin": "http://evil.example"}) == 403
    assert post({"Content-Type": "text/plain"}) == 415
    assert post({"Content-Type": "application/x-www-form-urlencoded"}) == 415
    assert post({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}) == 403
    assert _rows(comps) == []
    assert post({"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}"}) == 200  # the page itself


def test_another_host_name_is_refused_and_every_answer_is_framed_safely(served):
    session, url, comps, port = served
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        answer = _raw(port, f"GET /api/next HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        assert _status(answer) == 421, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert _status(_raw(port, f"GET /api/next HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())) == 200
    for path in ("/", "/api/next", "/img/i0.png", "/img/nope.png", "/nope"):
        answer = _raw(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert b"x-frame-options: deny" in head and b"frame-ancestors 'none'" in head and b"nosniff" in head, path


def test_idle_and_slow_clients_are_timed_out_and_others_still_served(tmp_path, monkeypatch):
    import relcomp.annotate.server as server_module

    monkeypatch.setattr(server_module, "HEAD_S", 1.0)
    imgs = _folder(tmp_path, 6)
    server, url = _serve(Session(imgs, tmp_path / "j.csv"))
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(300)]
        t = time.monotonic()
        assert _get(url + "/api/next")[0] == 200 and time.monotonic() - t < 5  # not queued behind the idle ones
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        closed_at = None
        for byte in b"GET /api/next HTTP/1.1\r\nHost: 127.0.0.1\r\n":  # a head a byte at a time
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed_at = time.monotonic() - t
                break
            time.sleep(0.05)
        time.sleep(1.5)
        assert all(s.recv(1) == b"" for s in idle[:20])  # the server closed them
        assert slow.recv(1) == b"" or closed_at is not None
        for s in [*idle, slow]:
            s.close()
    finally:
        server.stop()


def test_bad_starts_are_one_line_and_exit_2(tmp_path, capsys):
    imgs = _folder(tmp_path, 6)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,b,outcome,annotator\ni0.png,sub/i1.png,>,Jos\xe9\n".encode("latin-1"))
    notrun = tmp_path / "notrun"
    notrun.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps({"model": "weak"}))
    (corrupt / "best.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    cases = [(["--comparisons", str(latin)], "not UTF-8 text"),
             (["--comparisons", str(tmp_path)], "is a folder"),
             (["--comparisons", str(tmp_path / "j.csv"), "--port", "99999"], "--port must be 0 to 65535"),
             (["--comparisons", str(tmp_path / "j.csv"), "--suggest-from", str(notrun)], str(notrun)),
             (["--comparisons", str(tmp_path / "j.csv"), "--suggest-from", str(corrupt)], str(corrupt)),
             (["--comparisons", str(tmp_path / "j.csv"), "--host", "no.such.host.invalid", "--token", "t"], "--host"),
             (["--comparisons", str(tmp_path / "j.csv"), "--learn", "weak", "--suggest-from", str(notrun)], "--learn"),
             (["--comparisons", str(tmp_path / "j.csv"), "--learn", "siamese", "--unlabeled", "clusters"], "names classes"),
             (["--comparisons", str(tmp_path / "j.csv"), "--learn", "weak"], "needs --classes K")]
    for args, message in cases:
        assert main(["annotate", "--images", str(imgs), *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (args, err)


def test_a_bom_file_train_accepts_is_read_and_appended_to(tmp_path):
    imgs = _folder(tmp_path, 6)
    comps = tmp_path / "bom.csv"
    comps.write_bytes("\ufeffa,b,outcome\ni0.png,sub/i1.png,>\n".encode())
    session = Session(imgs, comps)
    assert session.log.count() == 1 and ("i0.png", "sub/i1.png") in session.log.pairs
    assert session.judge("i2.png", "sub/i3.png", "<", "x") is not None
    text = comps.read_bytes().decode("utf-8-sig")
    assert text.splitlines()[2].startswith("i2.png,sub/i3.png,<")


def test_a_token_with_url_characters_gives_a_link_that_works(tmp_path):
    from relcomp.annotate import Server

    imgs = _folder(tmp_path, 6)
    server = Server(Session(imgs, tmp_path / "j.csv"), port=0, token="a+b&c%d#e")
    import threading
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        deadline = time.time() + 10
        while not server.uvicorn.started and time.time() < deadline:
            time.sleep(0.01)
        link = server.url()
        assert _get(link.replace("/?", "/api/next?"))[0] == 200
        assert _get(f"http://127.0.0.1:{server.port}/api/next?token=a+b")[0] == 403
    finally:
        server.stop()


def test_ipv6_localhost_binds_and_answers(tmp_path):
    from relcomp.annotate import Server

    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    server = Server(Session(_folder(tmp_path, 6), tmp_path / "j.csv"), host="::1", port=0)
    import threading
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        deadline = time.time() + 10
        while not server.uvicorn.started and time.time() < deadline:
            time.sleep(0.01)
        assert server.url().startswith("http://[::1]:")
        assert _get(server.url() + "api/next")[0] == 200
    finally:
        server.stop()


def test_the_csv_is_not_read_again_on_every_request(served, monkeypatch):
    import relcomp.annotate.log as log_module

    session, url, comps, _ = served
    opened = []
    monkeypatch.setattr(log_module, "open", lambda *a, **k: opened.append(a[0]) or open(*a, **k), raising=False)
    for _ in range(10):
        assert _get(url + "/api/next")[0] == 200
    assert [p for p in opened if Path(p) == comps] == []
    pair = json.loads(_get(url + "/api/next")[1])["pair"]
    assert _post(url + "/api/judge", {"a": pair[0], "b": pair[1], "outcome": ">"})[0] == 200
    assert len([p for p in opened if Path(p) == comps]) <= 2  # the appended line, read once
