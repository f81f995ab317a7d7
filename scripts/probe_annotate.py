"""Replay the server items of tests/test_annotate_server.py (#27, item 4) as raw HTTP against the
`relcomp annotate` of a source tree, old or new: `python scripts/probe_annotate.py SRC_DIR WORK_DIR`
(WORK_DIR/imgs: a few PNGs named 0000.png ...). Prints "holds" or "FAILS" per item."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def raw(port, data, timeout=3.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            try:
                while c := s.recv(65536):
                    chunks.append(c)
            except (TimeoutError, ConnectionResetError):
                pass
            return b"".join(chunks)
    except OSError as e:
        return str(e).encode()


def status(a):
    return int(a.split(b" ", 2)[1]) if a.startswith(b"HTTP/1") else 0


def start(exe_dir, imgs, comps, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=exe_dir)
    p = subprocess.Popen(
        [sys.executable, "-m", "relcomp", "annotate", "--images", imgs, "--comparisons", comps, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = p.stdout.readline()
    if "open http://" not in line:
        return p, None, line + p.stderr.read()
    return p, int(line.split("open http://")[1].split("/")[0].rsplit(":", 1)[1]), line


src, root = sys.argv[1], Path(sys.argv[2])
imgs = str(root / "imgs")
res = {}
c = root / "nl.csv"
c.write_text("a,b,outcome\n0000.png,0001.png,>\n0002.png,0003.png,<")
p, port, _ = start(src, imgs, str(c))
time.sleep(0.5)
res["last row without newline kept"] = "0002.png,0003.png,<" in c.read_text()
c2 = root / "j.csv"
c2.unlink(missing_ok=True)
p.kill()
p.wait()
p, port, line = start(src, imgs, str(c2))
time.sleep(0.5)
H = f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n"


def post(body, extra="", ct="application/json"):
    b = body if isinstance(body, bytes) else json.dumps(body).encode()
    return status(
        raw(
            port,
            f"POST /api/judge HTTP/1.1\r\n{H}Content-Type: {ct}\r\nContent-Length: {len(b)}\r\n{extra}\r\n".encode()
            + b,
        )
    )


res["wrong JSON types are 400"] = all(
    post(b) == 400 for b in ([1], "x", 42, None, {"a": [1], "b": "0000.png", "outcome": ">"})
)
res["deep nesting 400"] = post(b"[" * 60000) == 400
res["Content-Length -1 refused"] = status(
    raw(port, f"POST /api/judge HTTP/1.1\r\n{H}Content-Type: application/json\r\nContent-Length: -1\r\n\r\n".encode())
) in (400, 413)
n0 = len(c2.read_text().splitlines())
res["Origin evil refused"] = (
    post({"a": "0000.png", "b": "0005.png", "outcome": ">"}, "Origin: http://evil.example\r\n") == 403
)
res["text/plain refused"] = post({"a": "0000.png", "b": "0006.png", "outcome": ">"}, ct="text/plain") in (403, 415)
res["Host evil refused"] = status(
    raw(port, b"GET /api/next HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
) in (400, 403, 421)
head = raw(port, f"GET / HTTP/1.1\r\n{H}\r\n".encode()).split(b"\r\n\r\n")[0].lower()
res["X-Frame-Options and CSP"] = b"x-frame-options" in head and b"content-security-policy" in head
post({"a": "0000.png", "b": "0009.png", "outcome": ">", "annotator": "=HYPERLINK(1)"})
res["formula made safe"] = "'=HYPERLINK" in c2.read_text() or "=HYPERLINK" not in c2.read_text()
post({"a": "0000.png", "b": "0009.png", "outcome": "<"})
res["pair judged twice refused"] = c2.read_text().count("0000.png,0009.png") <= 1
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
t = time.time()
a = raw(port, f"GET /api/next HTTP/1.1\r\n{H}\r\n".encode(), timeout=5)
res["served beside 50 idle sockets"] = status(a) == 200 and time.time() - t < 2
time.sleep(11)
try:
    idle[0].settimeout(1)
    res["idle socket closed by the server in 10 s"] = idle[0].recv(1) == b""
except TimeoutError:
    res["idle socket closed by the server in 10 s"] = False
for s in idle:
    s.close()
p.kill()
p.wait()
for name, args in (
    ("latin-1 one line", ["--comparisons", str(root / "latin.csv")]),
    ("port 99999 one line", ["--comparisons", str(c2), "--port", "99999"]),
    ("comparisons DIR one line", ["--comparisons", str(root)]),
    ("suggest-from not a run refused", ["--comparisons", str(c2), "--suggest-from", str(root)]),
):
    (root / "latin.csv").write_bytes("a,b,outcome,annotator\n0000.png,0001.png,>,Jos\xe9\n".encode("latin-1"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=src)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "relcomp", "annotate", "--images", imgs, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=20,
        )
        res[name] = r.returncode == 2 and "Traceback" not in r.stderr
    except subprocess.TimeoutExpired:
        res[name] = False  # it started serving
for k, v in res.items():
    print(f"{'holds' if v else 'FAILS'}  {k}")
