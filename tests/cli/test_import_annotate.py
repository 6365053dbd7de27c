"""`feedbackgen import-labels`, `info` per source, `annotate` through the CLI, and a real headless
browser (Debian's chromium + chromium-driver via selenium) clicking through the annotation page."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from presa_cli.feedbackgen_app import app
from typer.testing import CliRunner

from feedbackgen.store import open_store

TASK = "TinyRun-mini"


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def store(tiny_task, tmp_path: Path) -> Path:
    out = tmp_path / "stores" / "s.zarr"
    res = run("make", "--task", TASK, "--seed", "3", "--n-pairs", "60", "--n-safety", "40", "--out", out)
    assert res.exit_code == 0, res.output
    return out


def test_import_labels_and_info_per_source(store: Path, tmp_path: Path) -> None:
    f = tmp_path / "l.csv"
    f.write_text("source,a,b,label\nalice,0,60,1\nalice,1,61,0\nbob,0,60,1\nbob,61,1,1\n")
    res = run("import-labels", store, "--from", f)
    assert res.exit_code == 0, res.output
    assert "s-v2.zarr" in res.stdout and "4 preference labels" in res.stdout
    v2 = store.with_name("s-v2.zarr")
    assert run("validate", v2).exit_code == 0
    info = run("info", v2)
    assert info.exit_code == 0 and "label sources" in info.stdout and "human:alice" in info.stdout
    assert "Cohen's kappa" in info.stdout
    rec = json.loads(run("info", v2, "--json").stdout)
    pairs = {(p["a"], p["b"], p["channel"]): p for p in rec["label_sources"]["pairs"]}
    ab = pairs[("human:alice", "human:bob", "preferences")]
    assert ab["n"] == 2 and ab["agreement"] == 1.0 and ab["kappa"] == 1.0  # (b, a) given as (a, b) flipped
    assert [s["id"] for s in rec["label_sources"]["sources"]] == ["teacher:oracle+mistake", "human:alice",
                                                                  "human:bob"]


def test_import_errors_one_summary_line_then_details(store: Path, tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("source,a,b,label\nalice,0,999,1\nalice,0,1,2\nalice,0,1,1\n,2,3,1\n")
    res = run("import-labels", store, "--from", f)
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert lines[0].startswith("error: 3 problems in the label file") and "nothing was written" in lines[0]
    assert [x.strip().split(":")[0] for x in lines[1:]] == ["line 2", "line 3", "line 5"]
    assert sorted(p.name for p in store.parent.iterdir()) == ["s.zarr"]
    res = run("import-labels", store, "--from", tmp_path / "nope.csv")
    assert res.exit_code == 1 and res.stderr.count("\n") == 1 and "does not exist" in res.stderr


def test_annotate_cli_refusals_and_finish(store: Path, tmp_path: Path) -> None:
    res = run("annotate", store, "--host", "0.0.0.0")
    assert res.exit_code == 1 and "loopback" in res.stderr and "Traceback" not in res.output
    res = run("annotate", store, "--finish")
    assert res.exit_code == 1 and "no journal" in res.stderr
    from feedbackgen.annotate import Annotation

    ann = Annotation(store, pairs=2)
    ann.answer("zoe", 0, "equal", True, False)
    ann.close()
    res = run("annotate", store, "--finish", "--out", tmp_path / "done.zarr")
    assert res.exit_code == 0, res.output
    new = open_store(tmp_path / "done.zarr")
    assert new.pref_label[-1] == 0.5
    assert new.metadata["label_sources"][-1] == {"id": "human:zoe", "kind": "human"}


def _browser_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver); .ci/run installs them in CI")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the 'test' extra")
    return webdriver, chromium, driver


@pytest.mark.browser
def test_real_browser_clicks_through_pairs(store: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    webdriver, chromium, driver_path = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from feedbackgen.annotate import journal_path, make_server

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let selenium-manager look for downloads
    server = make_server(store, pairs=3)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        wait = WebDriverWait(browser, 15)
        browser.get(server.url)
        name = browser.find_element(By.ID, "annotator")
        name.clear()
        name.send_keys("robin\n")
        progress = browser.find_element(By.ID, "progress")
        wait.until(lambda b: progress.text == "0 / 3 answered")
        # no frames in this store: the page says so and plots observations
        assert "No recorded frames" in browser.find_element(By.ID, "note-a").text
        body = browser.find_element(By.TAG_NAME, "body")
        # pair 0 with the mouse: B better, A safe, B unsafe
        for button in ("pref-b", "safe-a", "unsafe-b", "submit"):
            browser.find_element(By.ID, button).click()
        wait.until(lambda b: progress.text == "1 / 3 answered")
        # pair 1 with the keyboard: A better, A unsafe, B safe, Enter
        for key in ("a", "2", "3", "\n"):
            body.send_keys(key)
        wait.until(lambda b: progress.text == "2 / 3 answered")
        # saving without a full answer is refused with a message
        body.send_keys("e")
        body.send_keys("\n")
        wait.until(lambda b: "Mark both" in b.find_element(By.ID, "status").text)
        # undo pair 1, answer it again as equal, then pair 2
        body.send_keys("u")
        wait.until(lambda b: progress.text == "1 / 3 answered")
        for key in ("e", "1", "3", "\n"):
            body.send_keys(key)
        wait.until(lambda b: progress.text == "2 / 3 answered")
        for key in ("b", "4", "4", "2", "\n"):  # last key wins: A unsafe
            body.send_keys(key)
        wait.until(lambda b: b.find_element(By.ID, "done").is_displayed())
        assert progress.text == "3 / 3 answered"
    finally:
        browser.quit()
        server.shutdown()
        server.server_close()
    res = run("annotate", store, "--finish")
    assert res.exit_code == 0, res.output
    data, new = open_store(store), open_store(store.with_name("s-v2.zarr"))
    P, M = data.pref_a.shape[0], data.safety_segment.shape[0]
    a, b = np.asarray(data.pref_a)[:3], np.asarray(data.pref_b)[:3]
    np.testing.assert_array_equal(new.pref_a[P:], a)
    np.testing.assert_array_equal(new.pref_label[P:], [1.0, 0.5, 1.0])
    np.testing.assert_array_equal(new.safety_segment[M:], [a[0], b[0], a[1], b[1], a[2], b[2]])
    np.testing.assert_array_equal(new.safety_label[M:, 0], [1, 0, 1, 1, 0, 0])
    assert [new.metadata["label_sources"][i]["id"] for i in set(new.pref_source[P:])] == ["human:robin"]
    assert journal_path(store).is_file() and os.path.getsize(journal_path(store)) > 0
