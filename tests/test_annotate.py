"""`relcomp annotate`: the judging page's server (appends, undo, locking, resume, kill, token,
path traversal) over HTTP, and the page itself in a real headless Chromium when one is installed."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from relcomp.annotate import Session, make_server
from relcomp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _folder(tmp_path, n=5):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for k in range(n):  # the digit k, drawn
        img = Image.new("L", (28, 28))
        ImageDraw.Draw(img).text((9, 5), str(k % 10), fill=255, font=ImageFont.load_default(size=18))
        img.save(d / ("sub" if k % 2 else ".") / f"i{k}.png")
    (tmp_path / "secret.txt").write_text("not for the browser")
    os.symlink(tmp_path / "secret.txt", d / "link.png")  # an image name that leaves the folder
    return d


def _serve(session, **kw):
    server = make_server(session, port=0, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_judge_undo_resume_and_every_pair_once(tmp_path):
    imgs, comps = _folder(tmp_path, 4), tmp_path / "judged.csv"
    session = Session(imgs, comps, annotator="ann")
    assert sorted(session.names) == ["i0.png", "i2.png", "sub/i1.png", "sub/i3.png"]  # not link.png: it leaves
    server, url = _serve(session)
    try:
        assert b"Which is greater?" in _get(url + "/")[1]
        pair = json.loads(_get(url + "/api/next")[1])["pair"]
        status, r = _post(url + "/api/judge", {"a": pair[0], "b": pair[1], "outcome": ">", "annotator": "alice"})
        assert status == 200 and r["progress"] == {"judged": 1, "this_session": 1}
        rows = _rows(comps)
        assert [(x["a"], x["b"], x["outcome"], x["annotator"]) for x in rows] == [(pair[0], pair[1], ">", "alice")]
        assert rows[0]["time"][:4] == time.strftime("%Y")
        assert _post(url + "/api/undo", {"line": "a,b,>,x,y\n"})[1]["undone"] is False  # not written by this server
        assert _post(url + "/api/undo", {"line": r["line"]})[1]["undone"] is True and _rows(comps) == []
        assert _post(url + "/api/judge", {"a": pair[0], "b": "../secret.txt", "outcome": ">"})[0] == 400
        assert _post(url + "/api/judge", {"a": pair[0], "b": pair[1], "outcome": "maybe"})[0] == 400
        seen = set()
        while (pair := json.loads(_get(url + "/api/next")[1])["pair"]) is not None:
            key = tuple(sorted(pair))
            assert key not in seen
            seen.add(key)
            assert _post(url + "/api/judge", {"a": pair[0], "b": pair[1], "outcome": "="})[0] == 200
        assert len(seen) == 6  # 4 images: every pair once, then none
    finally:
        server.shutdown()
        server.server_close()
    again = Session(imgs, comps)  # a restart resumes: nothing left to offer
    assert again.progress()["judged"] == 6 and again.next_pair() is None


def test_only_the_folders_images_are_served(tmp_path):
    imgs = _folder(tmp_path)
    server, url = _serve(Session(imgs, tmp_path / "c.csv"))
    try:
        assert _get(url + "/img/sub/i1.png") == (200, (imgs / "sub" / "i1.png").read_bytes())
        for bad in ("/img/../secret.txt", "/img/%2e%2e/secret.txt", "/img/sub/../../secret.txt",
                    "/img/" + str(tmp_path / "secret.txt"), "/img//etc/passwd", "/img/link.png", "/img/nope.png",
                    "/../secret.txt", "/c.csv", "/img/"):
            assert _get(url + bad)[0] == 404, bad
    finally:
        server.shutdown()
        server.server_close()


def test_token_required_off_localhost(tmp_path):
    imgs = _folder(tmp_path)
    with pytest.raises(ConfigError, match="give --token"):
        make_server(Session(imgs, tmp_path / "c.csv"), host="0.0.0.0", port=0)
    server, url = _serve(Session(imgs, tmp_path / "c.csv"), token="s3cret")
    try:
        assert _get(url + "/api/next")[0] == 403 and _get(url + "/img/i0.png")[0] == 403
        assert _get(url + "/api/next?token=wrong")[0] == 403
        assert _get(url + "/api/next?token=s3cret")[0] == 200
        assert _get(url + "/img/i0.png", {"X-Relcomp-Token": "s3cret"})[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_two_servers_on_one_file_lose_and_mix_nothing(tmp_path):
    imgs, comps = _folder(tmp_path, 12), tmp_path / "shared.csv"
    servers = [_serve(Session(imgs, comps)) for _ in range(2)]
    names = sorted(Session(imgs, comps).names)

    def annotate(url, who):
        for k in range(40):
            _post(url + "/api/judge", {"a": names[k % 12], "b": names[(k + 1) % 12], "outcome": "<", "annotator": who})

    threads = [threading.Thread(target=annotate, args=(url, f"w{i}")) for i, (_, url) in enumerate(servers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for server, _ in servers:
        server.shutdown()
        server.server_close()
    rows = _rows(comps)
    assert len(rows) == 80 and sorted({r["annotator"] for r in rows}) == ["w0", "w1"]
    assert all(len(r) == 5 and r["outcome"] == "<" and r["a"] in names for r in rows)


def _start_cli(imgs, comps, *extra):
    proc = subprocess.Popen([sys.executable, "-m", "relcomp", "annotate", "--images", str(imgs), "--comparisons",
                             str(comps), "--port", "0", "--annotator", "cli", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    assert "open http://" in line, line + proc.stderr.read()
    return proc, line.split("open ")[1].split()[0].rstrip("/")


def test_sigkill_loses_nothing_acknowledged_and_restart_repairs(tmp_path):
    imgs, comps = _folder(tmp_path, 8), tmp_path / "judged.csv"
    proc, url = _start_cli(imgs, comps)
    try:
        acked = []
        for _ in range(6):
            a, b = json.loads(_get(url + "/api/next")[1])["pair"]
            assert _post(url + "/api/judge", {"a": a, "b": b, "outcome": ">"})[0] == 200
            acked.append((a, b))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [(r["a"], r["b"]) for r in _rows(comps)] == acked  # every acknowledged judgement, whole
    with open(comps, "a") as f:
        f.write("i0.png,sub/i1")  # what a kill in the middle of a write would leave
    proc, url = _start_cli(imgs, comps)
    try:
        rows = _rows(comps)
        assert [(r["a"], r["b"]) for r in rows] == acked and comps.read_text().endswith("\n")
        nxt = tuple(sorted(json.loads(_get(url + "/api/next")[1])["pair"]))
        assert nxt not in {tuple(sorted(p)) for p in acked}  # resumed: never a judged pair
    finally:
        proc.terminate()
        proc.wait()


def _browser():
    """A headless Chromium through Selenium, or a skip that says what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.mark.slow
def test_page_in_a_real_browser(tmp_path):
    """Chromium opens the page and presses keys: ← and = land in the CSV, u takes the last back;
    a path-traversal URL gets 404; a SIGKILL mid-session leaves a valid CSV. With
    RELCOMP_SCREENSHOT set, the page is saved there (the README's screenshot)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    imgs, comps = _folder(tmp_path, 8), tmp_path / "judged.csv"
    proc, url = _start_cli(imgs, comps, "--question", "Which digit is larger?")
    driver = _browser()
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 10)
        wait.until(lambda d: d.find_element(By.ID, "name-a").text != "")
        assert driver.find_element(By.ID, "question").text == "Which digit is larger?"
        left, right = driver.find_element(By.ID, "name-a").text, driver.find_element(By.ID, "name-b").text
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("\ue012")  # ArrowLeft: the left image is greater
        wait.until(lambda d: len(_rows(comps)) == 1)
        assert [(r["a"], r["b"], r["outcome"], r["annotator"]) for r in _rows(comps)] == [(left, right, ">", "cli")]
        wait.until(lambda d: d.find_element(By.ID, "name-a").text not in ("", left) or
                   d.find_element(By.ID, "name-b").text != right)
        body.send_keys("=")
        wait.until(lambda d: len(_rows(comps)) == 2)
        assert _rows(comps)[1]["outcome"] == "="
        body.send_keys("u")
        wait.until(lambda d: len(_rows(comps)) == 1)
        wait.until(lambda d: "judged" in d.find_element(By.ID, "progress").text)
        if os.environ.get("RELCOMP_SCREENSHOT"):
            driver.save_screenshot(os.environ["RELCOMP_SCREENSHOT"])
        # wait for the answer's text: page_source may be read before the body arrives on a busy machine
        driver.get(url + "/img/../secret.txt")
        wait.until(lambda d: "not found" in d.page_source)
        driver.get(url + "/img/%2e%2e/secret.txt")
        wait.until(lambda d: "not found" in d.page_source)
        driver.get(url + "/")
        wait.until(lambda d: d.find_element(By.ID, "name-a").text != "")
        driver.find_element(By.TAG_NAME, "body").send_keys("\ue014")  # ArrowRight
        wait.until(lambda d: len(_rows(comps)) == 2)
        proc.send_signal(signal.SIGKILL)  # mid-session
        proc.wait()
        rows = _rows(comps)
        assert len(rows) == 2 and rows[1]["outcome"] == "<" and comps.read_text().endswith("\n")
        assert all(set(r) == {"a", "b", "outcome", "annotator", "time"} and None not in r.values() for r in rows)
    finally:
        driver.quit()
        if proc.poll() is None:
            proc.kill()
