#!/usr/bin/env node
// Browser check of the containment report (`npm run demo:browser-check`, after `npm run demo`; CI runs it): headless
// Chromium renders demo/out/containment.html, the check reads the DOM over the DevTools protocol (puppeteer-core, as
// the OAuth e2e does; scripts/e2e/browser.mjs finds the browser) and asserts that the channel × attack matrix is
// there with one tile per cell of containment.json and the same verdict, then saves a screenshot of the matrix
// (demo/out/containment.png, or --screenshot PATH). Without a Chromium it is skipped with a message (install: `apt-get install -y chromium`);
// with CI=true a missing browser is a failure, since .ci/run installs one.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { findChromium } from "./e2e/browser.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    report: { type: "string", default: join(root, "demo/out") },
    screenshot: { type: "string" },
  },
});
const STEP_TIMEOUT_MS = 30_000;

function fail(message) {
  console.error(`browser check: FAIL — ${message}`);
  process.exit(1);
}

const executablePath = findChromium() ?? (existsSync("/usr/bin/google-chrome") ? "/usr/bin/google-chrome" : null);
if (!executablePath) {
  const message = "no Chromium found (install one: apt-get install -y chromium, or set CHROMIUM_PATH)";
  if (process.env.CI) fail(message);
  console.log(`browser check: skipped — ${message}`);
  process.exit(0);
}
const html = join(values.report, "containment.html");
const json = join(values.report, "containment.json");
if (!existsSync(html) || !existsSync(json)) fail(`no report in ${values.report}: run npm run demo first`);
const summary = JSON.parse(readFileSync(json, "utf8"));

const { default: puppeteer } = await import("puppeteer-core");
let browser;
try {
  browser = await puppeteer.launch({
    executablePath,
    headless: true,
    // Root in CI and containers: Chromium's sandbox needs user namespaces it may not have.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  await page.setViewport({ width: 1360, height: 900, deviceScaleFactor: 1 });
  await page.goto(pathToFileURL(html).href, { waitUntil: "load" });
  const dom = await page.evaluate(() => {
    const tiles = [...document.querySelectorAll("#matrix .tile")];
    const matrix = document.querySelector("#matrix");
    const box = matrix ? matrix.getBoundingClientRect() : null;
    return {
      rows: document.querySelectorAll("#matrix tr[data-channel]").length,
      channels: [...document.querySelectorAll("#matrix tr[data-channel]")].map((row) => row.dataset.channel),
      tiles: tiles.length,
      verdicts: tiles.map((tile) => tile.dataset.verdict),
      colours: [...new Set(tiles.map((tile) => getComputedStyle(tile).backgroundColor))],
      evidence: document.querySelectorAll("section.evidence").length,
      verdict: document.querySelector("#verdict")?.textContent ?? null,
      bottom: box ? Math.ceil(box.bottom + window.scrollY) : 0,
    };
  });
  const expectedChannels = [...new Set(summary.cells.map((cell) => cell.channel))];
  const problems = [];
  if (dom.tiles !== summary.cells.length) problems.push(`${dom.tiles} tiles for ${summary.cells.length} cells`);
  if (dom.rows !== expectedChannels.length)
    problems.push(`${dom.rows} matrix rows for ${expectedChannels.length} channels`);
  // The matrix groups cells by channel, in the order channels first appear.
  const grouped = expectedChannels.flatMap((channel) =>
    summary.cells.filter((cell) => cell.channel === channel).map((cell) => cell.verdict),
  );
  if (JSON.stringify(dom.verdicts) !== JSON.stringify(grouped)) {
    problems.push("tile verdicts differ from containment.json");
  }
  if (dom.evidence !== summary.cells.length) problems.push(`${dom.evidence} evidence sections`);
  if (dom.verdict !== (summary.ok ? "Contained" : "Leak or failure"))
    problems.push(`headline verdict "${dom.verdict}"`);
  if (dom.colours.length < new Set(summary.cells.map((cell) => cell.verdict)).size)
    problems.push("verdicts are not coloured apart");
  const shot = await page.screenshot({
    type: "png",
    captureBeyondViewport: true,
    clip: { x: 0, y: 0, width: 1360, height: Math.max(400, dom.bottom + 24) },
  });
  const target = values.screenshot ? resolve(values.screenshot) : join(values.report, "containment.png");
  writeFileSync(target, shot);
  if (problems.length) fail(problems.join("; "));
  console.log(
    `browser check: PASS — ${executablePath} rendered the matrix: ${dom.rows} channels, ${dom.tiles} cells (${dom.colours.length} colours), ${dom.evidence} evidence sections, verdict "${dom.verdict}"; screenshot ${target}`,
  );
} catch (error) {
  fail(error.message);
} finally {
  await browser?.close().catch(() => {});
}
process.exit(0);
