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

from relcomp.annotate import Server, Session
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
    """The page's server on a free port, serving from a thread; ``stop()`` it."""
    server = Server(session, port=0, **kw)
    threading.Thread(target=server.serve, daemon=True).start()
    deadline = time.time() + 10
    while not server.uvicorn.started and time.time() < deadline:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{server.port}"


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
        assert status == 200 and r["progress"] == {"judged": 1, "this_session": 1, "goal": None}
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
        r = json.loads(_get(url + "/api/next")[1])
        assert r["done"] is True and r["pair"] is None
    finally:
        server.stop()
    again = Session(imgs, comps)  # a restart resumes: nothing left to offer
    assert again.progress()["judged"] == 6 and again.next_pair() is None


def test_two_pages_of_one_server_never_hold_the_same_pair(tmp_path):
    session = Session(_folder(tmp_path, 4), tmp_path / "c.csv")  # 6 pairs
    held = [session.next_pair() for _ in range(6)]
    assert len({tuple(sorted(p)) for p in held}) == 6 and session.next_pair() is None  # all held, none twice
    session.release(*held[0])  # a page skipped it: the next page may have it
    assert tuple(sorted(session.next_pair())) == tuple(sorted(held[0]))
    assert session.judge(*held[1], ">", "x") is not None and session.judge(*held[1], "<", "y") is None


def test_the_running_agreement_and_counts_follow_judgements_and_undo(tmp_path):
    """The agreement and the counts are kept as judgements arrive (a status scores only the new
    rows) and equal a recount from the two files, also after an undo rewrote the comparisons."""
    from types import SimpleNamespace

    from relcomp.annotate.session import status_of

    session = Session(_folder(tmp_path, 6), tmp_path / "c.csv")
    lines = []
    for k in range(12):
        pair = session.next_pair()
        version = 1 + k // 5  # a new model every 5 judgements
        session.model = SimpleNamespace(version=version, trained_on=0, time=None, prob_greater=lambda a, b, k=k: (0.9, 0.2, 0.6)[k % 3])
        lines.append(session.judge(*pair, "><="[k % 4 % 3], f"ann{k % 2}"))
        status = status_of(session)
    assert session.undo(lines[3]) and session.undo(lines[7])
    status = status_of(session)
    predicted = {tuple(sorted((r["a"], r["b"]))): r for r in _rows(tmp_path / "c.csv.model.csv")}
    agree = {}
    for r in _rows(tmp_path / "c.csv"):
        if r["outcome"] != "=":
            p = predicted[tuple(sorted((r["a"], r["b"])))]
            p_a = float(p["p_greater"]) if p["a"] == r["a"] else 1 - float(p["p_greater"])
            agree.setdefault(int(p["version"]), []).append((p_a > 0.5) == (r["outcome"] == ">"))
    assert status["agreement_n"] == sum(map(len, agree.values())) == 7
    assert status["agreement"] == pytest.approx(sum(map(sum, agree.values())) / 7)
    assert {h["version"]: h["agreement"] for h in status["history"]} == {}  # no swap: no history entries
    assert session.agreement.per_version() == {v: pytest.approx(sum(oks) / len(oks)) for v, oks in agree.items()}
    assert status["by_annotator"] == {"ann0": 6, "ann1": 4}  # k = 3 and 7 (ann1) taken back


def test_the_rounds_schedule(tmp_path):
    """Round N after 20 x 2^(N-1) judgements; in between every --learn-every seconds once 10 new
    ones exist; after a failure, not before 10 more."""
    from relcomp.annotate.learner import Learner

    learner = Learner(Session(_folder(tmp_path, 4), tmp_path / "c.csv"), "weak", tmp_path / "rounds", [],
                      first=20, every_s=60, min_new=10)
    assert [learner.due(n) for n in (0, 19, 20)] == [False, False, True]
    learner.version, learner.trained_on, learner.last_time = 1, 22, time.monotonic()
    assert not learner.due(39) and learner.due(40)
    learner.last_time -= 61
    assert not learner.due(31) and learner.due(32)
    learner.failed_at = 40
    assert not learner.due(49) and learner.due(50)


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
        server.stop()


def test_token_required_off_localhost(tmp_path):
    imgs = _folder(tmp_path)
    with pytest.raises(ConfigError, match="give --token"):
        Server(Session(imgs, tmp_path / "c.csv"), host="0.0.0.0", port=0)
    server, url = _serve(Session(imgs, tmp_path / "c.csv"), token="s3cret")
    try:
        assert _get(url + "/api/next")[0] == 403 and _get(url + "/img/i0.png")[0] == 403
        assert _get(url + "/api/next?token=wrong")[0] == 403
        assert _get(url + "/api/next?token=s3cret")[0] == 200
        assert _get(url + "/img/i0.png", {"X-Relcomp-Token": "s3cret"})[0] == 200
    finally:
        server.stop()


def test_two_servers_on_one_file_lose_and_mix_nothing(tmp_path):
    """Two servers (two random seeds) and four pages on one file: no pair is judged twice, none
    is lost, and both servers count the same judgements."""
    imgs, comps = _folder(tmp_path, 12), tmp_path / "shared.csv"
    servers = [_serve(Session(imgs, comps)) for _ in range(2)]
    answered = []

    def annotate(url, who):
        for _ in range(40):  # 12 judgements each; a pair the other server's page judged first is a 409
            pair = json.loads(_get(url + "/api/next")[1])["pair"]
            status, _ = _post(url + "/api/judge", {"a": pair[0], "b": pair[1], "outcome": "<", "annotator": who})
            answered.append((who, status))
            if [w for w, s in answered if s == 200].count(who) == 12:
                return

    threads = [threading.Thread(target=annotate, args=(servers[i % 2][1], f"w{i}")) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = [json.loads(_get(url + "/api/status")[1])["judged"] for _, url in servers]
    for server, _ in servers:
        server.stop()
    rows = _rows(comps)
    keys = [tuple(sorted((r["a"], r["b"]))) for r in rows]
    assert len(keys) == len(set(keys)) == [s for _, s in answered].count(200) == 48 and counts == [48, 48]
    assert {s for _, s in answered} <= {200, 409}
    assert sorted({r["annotator"] for r in rows}) == ["w0", "w1", "w2", "w3"]
    assert all(len(r) == 5 and r["outcome"] == "<" for r in rows)


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
    """Chromium opens the page of `annotate --learn` and judges by keys and by a click: each lands
    in the CSV, u takes the last back; a round trains and the page shows the new model version; the
    sorted view shows the images in the model's order; a path-traversal URL gets 404; a SIGKILL
    mid-session leaves a valid CSV and the page says the server stopped. With RELCOMP_SCREENSHOTS
    set to a folder, the page and the sorted view are saved there (the README's screenshots)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    imgs, comps = _folder(tmp_path, 8), tmp_path / "judged.csv"
    (imgs / "link.png").unlink()  # train refuses a folder with a file that is not an image
    names = sorted(Session(imgs, comps).names, key=lambda n: n.split("i")[-1])  # by the digit drawn
    judged = [(names[i], names[j]) for i in range(8) for j in range(i)][:12]  # 12 judged before: a model soon
    comps.write_text("a,b,outcome,annotator,time\n" + "".join(f"{a},{b},>,before,\n" for a, b in judged))
    proc, url = _start_cli(imgs, comps, "--question", "Which digit is larger?", "--learn", "weak", "--classes", "3",
                           "--first-round", "14", "--round-steps", "10")
    driver = _browser()
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "name-a").text != "")
        assert driver.find_element(By.ID, "question").text == "Which digit is larger?"
        left, right = driver.find_element(By.ID, "name-a").text, driver.find_element(By.ID, "name-b").text
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("\ue012")  # ArrowLeft: the left image is greater
        wait.until(lambda d: len(_rows(comps)) == 13)
        assert [(r["a"], r["b"], r["outcome"], r["annotator"]) for r in _rows(comps)][-1] == (left, right, ">", "cli")
        wait.until(lambda d: (d.find_element(By.ID, "name-a").text, d.find_element(By.ID, "name-b").text)
                   not in {("", ""), (left, right)})
        def ready(d):  # a key pressed while the next pair loads is ignored: wait for it to show
            return "busy" not in d.find_element(By.ID, "pair").get_attribute("class")

        wait.until(ready)
        body.send_keys("=")
        wait.until(lambda d: len(_rows(comps)) == 14)
        assert _rows(comps)[-1]["outcome"] == "="
        wait.until(ready)
        body.send_keys("u")
        wait.until(lambda d: len(_rows(comps)) == 13)
        wait.until(lambda d: "Undone" in d.find_element(By.ID, "status").text)
        for _ in range(3):  # a click on the right image: the right one is greater
            n = len(_rows(comps))
            wait.until(lambda d: "busy" not in d.find_element(By.ID, "pair").get_attribute("class"))
            driver.find_element(By.ID, "img-b").click()
            wait.until(lambda d, n=n: len(_rows(comps)) == n + 1)
        assert _rows(comps)[-1]["outcome"] == "<"
        wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("model 1"))  # a round was trained
        assert "1 by you" not in driver.find_element(By.ID, "progress").text and "in all" in driver.find_element(
            By.ID, "progress").text
        shots = os.environ.get("RELCOMP_SCREENSHOTS")
        if shots:
            driver.save_screenshot(str(Path(shots) / "annotate.png"))
        driver.get(url + "/sorted")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#strip img")) == 8)
        assert "model 1" in driver.find_element(By.ID, "info").text
        if shots:
            driver.save_screenshot(str(Path(shots) / "annotate-sorted.png"))
        driver.set_window_size(390, 844)  # a phone: a compact header, square images side by side
        driver.get(url + "/")
        wait.until(lambda d: d.find_element(By.ID, "name-a").text != "")
        a, b = driver.find_element(By.ID, "img-a"), driver.find_element(By.ID, "img-b")
        assert driver.find_element(By.TAG_NAME, "header").size["height"] < 120
        assert abs(a.size["height"] - a.size["width"]) <= 2 and a.location["y"] == b.location["y"]
        if shots:
            driver.save_screenshot(str(Path(shots) / "annotate-phone.png"))
        driver.set_window_size(1280, 800)
        # wait for the answer's text: page_source may be read before the body arrives on a busy machine
        for bad in ("/img/../secret.txt", "/img/%2e%2e/secret.txt"):
            driver.get(url + bad)
            wait.until(lambda d: "not found" in d.page_source.lower() or "no such image" in d.page_source)
        driver.get(url + "/")
        wait.until(lambda d: d.find_element(By.ID, "name-a").text != "")
        n = len(_rows(comps))
        driver.find_element(By.TAG_NAME, "body").send_keys("\ue014")  # ArrowRight
        wait.until(lambda d: len(_rows(comps)) == n + 1)
        proc.send_signal(signal.SIGKILL)  # mid-session
        proc.wait()
        rows = _rows(comps)
        assert len(rows) == n + 1 and rows[-1]["outcome"] == "<" and comps.read_text().endswith("\n")
        assert all(set(r) == {"a", "b", "outcome", "annotator", "time"} and None not in r.values() for r in rows)
        wait.until(lambda d: "busy" not in d.find_element(By.ID, "pair").get_attribute("class"))
        driver.find_element(By.TAG_NAME, "body").send_keys("\ue014")
        wait.until(lambda d: "not answering" in d.find_element(By.ID, "banner").text)
    finally:
        driver.quit()
        if proc.poll() is None:
            proc.kill()


def test_the_trainer_process_runs_command_after_command_and_survives_a_kill():
    """The learner's one trainer process (relcomp.annotate.worker): each command answered with its
    exit code and the error's last line; a killed process fails the command in flight only, and
    the next command starts a new one."""
    from relcomp.annotate.worker import Worker

    w = Worker()
    try:
        assert w.run(["--version"]) == (0, None)
        first = w.pid
        rc, error = w.run(["eval", "/nonexistent/run"])
        assert rc == 2 and "not a relcomp run folder" in error and w.pid == first  # the same process
        os.kill(first, signal.SIGKILL)
        rc, error = w.run(["--version"])  # written to a dead process, or it died before answering
        assert (rc, error) == (0, None) or "the trainer process stopped" in error
        assert w.run(["--version"]) == (0, None) and w.pid != first
    finally:
        w.stop()
    assert w.pid is None
