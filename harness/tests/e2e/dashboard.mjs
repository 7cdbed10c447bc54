// The dashboard in a real browser: Debian's chromium, headless, driven by playwright-core.
//
//   node harness/tests/e2e/dashboard.mjs URL SCREENSHOT_DIR EXPECT_JSON
//
// URL is a running `crusades serve` over a seeded store; EXPECT_JSON says what the seed should
// show: {"rows": N, "leader": SHA256, "points": N, "evaluation": ID, "gates": N, "ops": N,
// "rejected": ID}. Chromium is $CHROMIUM, else /usr/bin/chromium. Exits 0 when every check
// holds, 1 with the failures otherwise; console errors, page errors and failed requests fail
// it too. Screenshots (leaderboard.png, evaluation.png, rejected.png; failure.png when the
// script fails) go to SCREENSHOT_DIR.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, outDir, expectJson] = process.argv.slice(2);
if (!url || !outDir || !expectJson) {
  console.error('usage: node dashboard.mjs URL SCREENSHOT_DIR EXPECT_JSON');
  process.exit(2);
}
const expected = JSON.parse(expectJson);
mkdirSync(outDir, { recursive: true });

const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: 60_000,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
  ],
});

const problems = [];
let page;
try {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    deviceScaleFactor: 1,
    colorScheme: process.env.E2E_COLOR_SCHEME === 'dark' ? 'dark' : 'light',
  });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });

  // ---- the leaderboard
  const response = await page.goto(url, { waitUntil: 'load' });
  check(response && response.ok(), `GET ${url} answers ${response && response.status()}`);
  const csp = response ? response.headers()['content-security-policy'] || '' : '';
  check(csp.includes("default-src 'self'"), `the page is served with CSP "${csp}"`);
  await page.waitForSelector('#leaderboard tbody tr');
  await page.waitForSelector('#mfu-chart svg');

  const rows = await page.locator('#leaderboard tbody tr').count();
  check(rows === expected.rows, `leaderboard rows: ${rows} (expected ${expected.rows})`);
  const firstSha = await page.locator('#leaderboard tbody tr').first().getAttribute('data-sha');
  check(firstSha === expected.leader, `first row is the leader: ${firstSha?.slice(0, 12)} (expected ${expected.leader.slice(0, 12)})`);
  const leaderRow = await page.locator('#leaderboard tbody tr.leader').count();
  check(leaderRow === 1, `one row is marked leader (${leaderRow})`);
  const firstRank = (await page.locator('#leaderboard tbody tr td.rank').first().textContent())?.trim();
  check(firstRank === '1', `first rank is 1 (${firstRank})`);

  const circles = await page.locator('#mfu-chart svg circle').count();
  check(circles >= expected.points, `chart points: ${circles} (expected ≥ ${expected.points})`);
  const leaderLine = await page.locator('#mfu-chart svg path.leader-line').count();
  check(leaderLine === 1, `chart has the leader's step line (${leaderLine})`);
  const toBeatLine = await page.locator('#mfu-chart svg line.to-beat-line').count();
  check(toBeatLine === 1, `chart has the to-beat line (${toBeatLine})`);
  const ticks = await page.locator('#mfu-chart svg text.tick').count();
  check(ticks >= 4, `chart axes have tick labels (${ticks})`);
  const box = await page.locator('#mfu-chart svg').boundingBox();
  check(box && box.width > 300 && box.height > 100, `chart is laid out (${box && `${Math.round(box.width)}×${Math.round(box.height)}`})`);

  const toBeat = (await page.locator('#to-beat').textContent())?.trim() ?? '';
  check(/^\d+\.\d+%$/.test(toBeat), `"MFU to beat" shows a percentage: ${toBeat}`);
  if (typeof expected.to_beat === 'number') {
    const want = `${(expected.to_beat * 100).toFixed(2)}%`;
    check(toBeat === want, `"MFU to beat" is ${want} (${toBeat})`);
  }
  const weightRows = await page.locator('#weights li').count();
  check(weightRows >= 1, `the weight vector is shown (${weightRows} uids)`);
  const evalRows = await page.locator('#evaluations tbody tr').count();
  check(evalRows >= 1, `recent evaluations are listed (${evalRows})`);
  const html = await page.content();
  check(!html.includes('AGFzbQ') && !html.includes('\0asm'), 'the page holds no wasm bytes');

  await page.screenshot({ path: join(outDir, 'leaderboard.png'), fullPage: true });

  // ---- one evaluation, reached through its link in the recent evaluations
  const link = page.locator(`#evaluations a[href="#/evaluation/${expected.evaluation}"]`).first();
  check((await link.count()) === 1, `the recent evaluations link to #/evaluation/${expected.evaluation}`);
  await link.click();
  await page.waitForSelector('#gates tbody tr');
  const gates = await page.locator('#gates tbody tr').count();
  check(gates === expected.gates, `gate rows: ${gates} (expected ${expected.gates})`);
  const bars = await page.locator('#op-profile .bar').count();
  const wantBars = Math.min(15, expected.ops);
  check(bars === wantBars, `op bars: ${bars} (expected ${wantBars})`);
  const widths = await page.locator('#op-profile .bar-fill').evaluateAll((els) => els.map((e) => e.getBoundingClientRect().width));
  check(widths.length > 0 && widths[0] > 0 && widths.every((w, i) => i === 0 || w <= widths[i - 1] + 0.5),
    `op bars are drawn, longest first (${widths.slice(0, 3).map((w) => w.toFixed(0)).join(', ')}…)`);
  const shaText = (await page.locator('#summary code.sha.full').textContent())?.trim();
  check(/^[0-9a-f]{64}$/.test(shaText ?? ''), 'the summary shows the full sha256');
  const verdict = (await page.locator('#summary .badge.verdict').first().textContent())?.trim();
  check(verdict === 'accepted', `the verdict badge says accepted (${verdict})`);
  await page.screenshot({ path: join(outDir, 'evaluation.png'), fullPage: true });

  // ---- a rejected evaluation shows its failed gate
  if (expected.rejected !== undefined) {
    await page.goto(`${url.replace(/\/?$/, '/')}#/evaluation/${expected.rejected}`);
    // Only the hash changes, so the previous evaluation's gates are still on the page until
    // this one renders: wait for this one's heading, not for any gate row.
    await page.waitForFunction(
      (id) => document.querySelector('#summary-h')?.textContent.trim() === `Evaluation #${id}`,
      expected.rejected,
    );
    await page.waitForSelector('#gates tbody tr');
    const failed = await page.locator('#gates tbody tr.failed').count();
    check(failed >= 1, `the rejected evaluation shows its failed gate (${failed})`);
    const v = (await page.locator('#summary .badge.verdict').first().textContent())?.trim();
    check(v === 'rejected', `its verdict badge says rejected (${v})`);
    await page.screenshot({ path: join(outDir, 'rejected.png'), fullPage: true });
  }

  // ---- back to the leaderboard through the header link
  await page.locator('a.brand').click();
  await page.waitForSelector('#leaderboard tbody tr');
  check((await page.locator('#leaderboard tbody tr').count()) === expected.rows, 'the brand link leads back to the leaderboard');

  if (process.env.E2E_DARK_SCREENSHOT === '1') {
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.screenshot({ path: join(outDir, 'leaderboard-dark.png'), fullPage: true });
  }
} catch (e) {
  failures.push(`the script failed: ${e.stack || e}`);
  console.log(`FAIL ${e.stack || e}`);
  if (page) await page.screenshot({ path: join(outDir, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}

for (const p of problems) failures.push(p);
for (const p of problems) console.log(`FAIL ${p}`);
console.log(`screenshots: ${outDir}`);
if (failures.length) {
  console.log(`${failures.length} check(s) failed`);
  process.exit(1);
}
console.log('all checks passed');
