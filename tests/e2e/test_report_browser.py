"""The report in a real browser: headless Chromium opens the generated files from disk.

Driven by Playwright (`playwright-core`, npm, in the git-ignored .tools/node) with Debian's
`chromium`; nothing is downloaded. Every request that is not a file:// URL is aborted and
counted: the report must not try the network. Screenshots go to test-artifacts/report/.
Skips when Chromium, Node or playwright-core is missing, except under CI (then it fails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gatehouse.recording.stores import LocalStore
from gatehouse.report.build import ReportOptions, build_report
from gatehouse.report.links import session_slug
from support.harness import REPO, need
from support.report_fixtures import INJECTION, bulk_store, scenario_store

CHROMIUM = os.environ.get("GATEHOUSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
NODE_TOOLS = Path(os.environ.get("GATEHOUSE_NODE_TOOLS") or REPO / ".tools" / "node")
PLAYWRIGHT = NODE_TOOLS / "node_modules" / "playwright-core"
ARTIFACTS = REPO / "test-artifacts" / "report"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SHOTS = (
    "index",
    "index-filter-user",
    "index-filter-request-id",
    "session-at-request",
    "session",
    "session-injection",
    "session-dark",
    "session-narrow",
    "index-narrow",
    "index-many-sessions",
)

pytestmark = pytest.mark.e2e


@pytest.fixture(name="demo_module")
def _demo_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gatehouse_demo", REPO / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# One script, one browser: each step records what it saw; the test asserts on the JSON it prints.
SCRIPT = r"""
const { chromium } = require(process.env.PLAYWRIGHT);
const cfg = JSON.parse(process.env.CFG);
const out = { steps: {}, network: [], dialogs: [], errors: [], console: [] };

(async () => {
  const context = await chromium.launchPersistentContext(cfg.userDataDir, {
    executablePath: cfg.chromium, headless: true, args: cfg.flags, viewport: { width: 1280, height: 900 },
  });
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("file://")) return route.continue();
    out.network.push(url);
    return route.abort();
  });
  const page = context.pages()[0] || await context.newPage();
  page.on("dialog", (d) => { out.dialogs.push(d.message()); d.dismiss(); });
  page.on("pageerror", (e) => out.errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") out.console.push(m.text()); });
  const shot = (name, full) => page.screenshot({ path: cfg.artifacts + "/" + name + ".png", fullPage: !!full });
  const rows = () => page.$$eval("#rows tr", (trs) => trs.map((tr) => tr.innerText));
  const status = () => page.textContent("#status");

  try {
    await page.goto(cfg.index);
    await page.waitForFunction(() => /sessions/.test(document.getElementById("status").textContent));
    out.steps.loaded = { status: await status(), rows: (await rows()).length };
    await shot("index");

    await page.fill("input[name=user]", "bob");
    await page.waitForFunction(() => document.querySelectorAll("#rows tr").length === 1);
    out.steps.user = { rows: await rows(), status: await status() };
    await shot("index-filter-user");

    await page.click("button[type=reset]");
    await page.fill("input[name=from]", "2026-01-01T10:30");
    await page.fill("input[name=until]", "2026-01-01T11:30");
    await page.waitForTimeout(300);
    out.steps.time = { rows: await rows() };

    await page.click("button[type=reset]");
    await page.waitForTimeout(200);
    await page.click("th[data-key=exchanges] button");
    await page.waitForTimeout(100);
    out.steps.sorted = { first: (await rows())[0], sort: await page.getAttribute("th[data-key=exchanges]", "aria-sort") };

    await page.fill("input[name=rid]", cfg.requestId);
    await page.waitForSelector("#rid-jump");
    out.steps.rid = { rows: await rows(), status: await status() };
    await shot("index-filter-request-id");
    await Promise.all([page.waitForNavigation(), page.click("#rid-jump")]);
    await page.waitForTimeout(200);
    out.steps.session = {
      url: page.url(),
      targeted: await page.$eval("article.exchange.target", (a) => a.id),
      title: await page.title(),
      masks: await page.$$eval("mark.mask", (ms) => ms.map((m) => m.getAttribute("data-rule"))),
    };
    await shot("session-at-request");
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot("session", true);

    await page.goto(cfg.index + "#rid=" + encodeURIComponent(cfg.exchangeId));
    await page.waitForSelector("#rid-jump");
    out.steps.ridFromHash = { rows: await rows(), href: await page.getAttribute("#rid-jump", "href") };

    await page.goto(cfg.injection);
    await page.waitForTimeout(300);
    out.steps.injection = {
      pwned: await page.evaluate(() => window.__pwned === undefined ? null : window.__pwned),
      scripts: await page.$$eval("script", (ss) => ss.map((s) => s.getAttribute("src") || s.type || "inline")),
      bold: await page.$$eval("main b", (bs) => bs.length),
      text: await page.textContent("main"),
    };
    await shot("session-injection");

    await page.emulateMedia({ colorScheme: "dark" });
    await page.goto(cfg.session);
    out.steps.dark = { background: await page.evaluate(() => getComputedStyle(document.body).backgroundColor) };
    await shot("session-dark");

    await page.setViewportSize({ width: 390, height: 844 });
    await page.emulateMedia({ colorScheme: "light" });
    await page.goto(cfg.session);
    out.steps.narrow = { overflow: await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth) };
    await shot("session-narrow", true);
    await page.goto(cfg.index);
    await page.waitForFunction(() => /sessions/.test(document.getElementById("status").textContent));
    out.steps.narrowIndex = { overflow: await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth) };
    await shot("index-narrow");

    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(cfg.bigIndex);
    await page.waitForFunction(() => /sessions/.test(document.getElementById("status").textContent));
    out.steps.big = { pager: await page.textContent("#pager"), firstRows: (await rows()).length };
    await page.click("#pager button:nth-of-type(3)");
    out.steps.big.pager2 = await page.textContent("#pager");
    await shot("index-many-sessions");
    const t0 = Date.now();
    await page.fill("input[name=user]", "carol");
    await page.waitForFunction(() => /match/.test(document.getElementById("status").textContent));
    Object.assign(out.steps.big, { status: await status(), rows: (await rows()).length, filterMs: Date.now() - t0,
                                   pagerFiltered: await page.textContent("#pager") });
  } catch (e) {
    out.failure = String(e && e.stack || e);
    await shot("failure").catch(() => {});
  }
  await context.close();
  process.stdout.write(JSON.stringify(out));
})();
"""


def _browser_ready() -> None:
    need(Path(CHROMIUM).exists(), f"Chromium is not installed ({CHROMIUM}; Debian package `chromium`)")
    need(shutil.which("node") is not None, "Node.js is not installed")
    need(
        PLAYWRIGHT.is_dir(),
        f"playwright-core is not installed in {NODE_TOOLS} (cd {NODE_TOOLS} && npm install playwright-core)",
    )


def test_report_in_chromium(tmp_path: Path) -> None:
    _browser_ready()
    sc = scenario_store(tmp_path)
    out = tmp_path / "report"
    build_report(LocalStore(sc.store_dir), ReportOptions(out=out))
    big_store = bulk_store(tmp_path / "big", sessions=260, exchanges=2)
    big = tmp_path / "big-report"
    build_report(LocalStore(big_store), ReportOptions(out=big))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in SHOTS + ("failure",):
        (ARTIFACTS / f"{name}.png").unlink(missing_ok=True)

    alice = out / "sessions" / f"{session_slug(sc.sessions['alice'])}.html"
    cfg = {
        "chromium": CHROMIUM,
        "flags": FLAGS,
        "userDataDir": str(tmp_path / "chromium-profile"),
        "artifacts": str(ARTIFACTS),
        "index": (out / "index.html").as_uri(),
        "session": alice.as_uri(),
        "injection": (out / "sessions" / f"{session_slug(sc.sessions['injection'])}.html").as_uri(),
        "bigIndex": (big / "index.html").as_uri(),
        "requestId": sc.request_ids["alice-4"],
        "exchangeId": sc.exchanges["bob-2"],
    }
    proc = subprocess.run(
        ["node", "-e", SCRIPT],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PLAYWRIGHT": str(PLAYWRIGHT), "CFG": json.dumps(cfg)},
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert "failure" not in res, res.get("failure")
    s = res["steps"]

    assert s["loaded"]["status"] == "3 sessions" and s["loaded"]["rows"] == 3
    # Filter by user.
    assert len(s["user"]["rows"]) == 1 and "bob@example.com" in s["user"]["rows"][0]
    assert s["user"]["status"] == "1 of 3 sessions match"
    # Filter by time range (UTC): only Bob's session was active between 10:30 and 11:30.
    assert len(s["time"]["rows"]) == 1 and "bob@example.com" in s["time"]["rows"][0]
    # Sort by a column.
    assert s["sorted"]["sort"] == "descending" and "alice@example.com" in s["sorted"]["first"]
    # Filter by Anthropic request id: the session, and a link to the exchange.
    assert len(s["rid"]["rows"]) == 1 and "alice@example.com" in s["rid"]["rows"][0]
    assert sc.exchanges["alice-4"] in s["rid"]["status"]
    assert s["session"]["url"] == f"{alice.as_uri()}#{sc.exchanges['alice-4']}"
    assert s["session"]["targeted"] == sc.exchanges["alice-4"]
    assert s["session"]["masks"] == ["aws-access-key-id"]
    # The gateway's exchange id works too, from a link (index.html#rid=...).
    assert len(s["ridFromHash"]["rows"]) == 1 and "bob@example.com" in s["ridFromHash"]["rows"][0]
    assert s["ridFromHash"]["href"].endswith(f"#{sc.exchanges['bob-2']}")
    # Recorded HTML and JavaScript are text: nothing ran, no tag was made of them.
    inj = s["injection"]
    assert inj["pwned"] is None and res["dialogs"] == []
    assert inj["scripts"] == ["../static/session.js"] and inj["bold"] == 0
    assert INJECTION in inj["text"]
    # Dark preference, narrow screen.
    assert s["dark"]["background"] == "rgb(18, 22, 28)"
    assert s["narrow"]["overflow"] <= 1 and s["narrowIndex"]["overflow"] <= 1
    # Hundreds of sessions: paged, filtered quickly.
    assert s["big"]["firstRows"] == 100 and "Page 1 of 3" in s["big"]["pager"]
    assert "Page 2 of 3" in s["big"]["pager2"]
    assert s["big"]["status"] == "65 of 260 sessions match" and s["big"]["rows"] == 65
    assert "Page" not in s["big"]["pagerFiltered"]
    assert s["big"]["filterMs"] < 2000
    # Self-contained: not one request left file://, and no script error.
    assert res["network"] == [] and res["errors"] == [] and res["console"] == []
    for name in SHOTS:
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 1000, name


def test_demo_records_and_reports(tmp_path: Path, demo_module) -> None:
    """`make demo`: a real gateway records a scripted session and the report shows it."""
    out = tmp_path / "report"
    rc = demo_module.main(["--out", str(out), "--workdir", str(tmp_path / "work")])
    assert rc == 0
    page = (out / "index.html").read_text()
    rows = json.loads(page.split('id="sessions-data">', 1)[1].split("</script>", 1)[0])
    by_id = {r["id"]: r for r in rows}
    alice = by_id[demo_module.SESSION_ID]
    assert alice["users"][0]["email"] == "alice@example.com"
    assert alice["exchanges"] == 4 and alice["refused"] == 2 and alice["masks"] >= 2
    assert alice["integrity"]["ok"]
    assert any(r["users"] and r["users"][0]["email"] == "bob@example.com" for r in rows)
    session = (out / "sessions" / f"{session_slug(demo_module.SESSION_ID)}.html").read_text()
    assert 'data-rule="aws-access-key-id"' in session and 'data-rule="github-pat"' in session
    assert "not allow the model claude-opus-4-1" in session and "not allow the endpoint /v1/files" in session
    assert "audience" in (out / "audit.html").read_text()
    for root in (out, tmp_path / "work" / "recordings"):
        for p in root.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                assert demo_module.AWS_KEY.encode() not in data and demo_module.GITHUB_TOKEN.encode() not in data, p
