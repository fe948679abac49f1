#!/usr/bin/env node
// Browser check of the containment report (`npm run demo:browser-check`, after `npm run demo`; CI runs it): headless
// Chromium renders demo/out/containment.html, the check reads the DOM over the DevTools protocol
// (chrome-remote-interface) and asserts that the channel × attack matrix is there with one tile per cell of
// containment.json and the same verdict, then saves a screenshot of the matrix (demo/out/containment.png, or
// --screenshot PATH). Without a Chromium it is skipped with a message (install: `apt-get install -y chromium`);
// with CI=true a missing browser is a failure, since .ci/run installs one.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import CDP from "chrome-remote-interface";
import { freePort } from "./e2e/ports.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    report: { type: "string", default: join(root, "demo/out") },
    screenshot: { type: "string" },
  },
});
const CANDIDATES = [
  process.env.CHROMIUM_PATH,
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
];
const START_TIMEOUT_MS = 30_000;

function fail(message) {
  console.error(`browser check: FAIL — ${message}`);
  process.exit(1);
}

const browser = CANDIDATES.find((path) => path && existsSync(path));
if (!browser) {
  const message = "no Chromium found (install one: apt-get install -y chromium, or set CHROMIUM_PATH)";
  if (process.env.CI) fail(message);
  console.log(`browser check: skipped — ${message}`);
  process.exit(0);
}
const html = join(values.report, "containment.html");
const json = join(values.report, "containment.json");
if (!existsSync(html) || !existsSync(json)) fail(`no report in ${values.report}: run npm run demo first`);
const summary = JSON.parse(readFileSync(json, "utf8"));

const port = await freePort();
const profile = mkdtempSync(join(tmpdir(), "tenant-mcp-chromium-"));
const chromium = spawn(
  browser,
  [
    "--headless=new",
    "--no-sandbox", // CI runs as root
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    `--remote-debugging-address=127.0.0.1`,
    `--remote-debugging-port=${port}`,
    `--user-data-dir=${profile}`,
    "about:blank",
  ],
  { stdio: "ignore", detached: true },
);
const stopBrowser = () => {
  try {
    process.kill(-chromium.pid, "SIGKILL");
  } catch {
    // already gone
  }
  rmSync(profile, { recursive: true, force: true });
};
process.on("exit", stopBrowser);

let client;
try {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      client = await CDP({ host: "127.0.0.1", port });
      break;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`Chromium's DevTools endpoint did not answer: ${error.message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const { Page, Runtime, Emulation } = client;
  await Page.enable();
  await Emulation.setDeviceMetricsOverride({ width: 1360, height: 900, deviceScaleFactor: 1, mobile: false });
  const loaded = Page.loadEventFired();
  await Page.navigate({ url: pathToFileURL(html).href });
  await loaded;
  const { result, exceptionDetails } = await Runtime.evaluate({
    returnByValue: true,
    expression: `(() => {
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
    })()`,
  });
  if (exceptionDetails) throw new Error(`DOM query failed: ${exceptionDetails.text}`);
  const dom = result.value;
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
  const shot = await Page.captureScreenshot({
    format: "png",
    captureBeyondViewport: true,
    clip: { x: 0, y: 0, width: 1360, height: Math.max(400, dom.bottom + 24), scale: 1 },
  });
  const target = values.screenshot ? resolve(values.screenshot) : join(values.report, "containment.png");
  writeFileSync(target, Buffer.from(shot.data, "base64"));
  if (problems.length) fail(problems.join("; "));
  console.log(
    `browser check: PASS — ${browser} rendered the matrix: ${dom.rows} channels, ${dom.tiles} cells (${dom.colours.length} colours), ${dom.evidence} evidence sections, verdict "${dom.verdict}"; screenshot ${target}`,
  );
} catch (error) {
  fail(error.message);
} finally {
  await client?.close().catch(() => {});
}
process.exit(0);
