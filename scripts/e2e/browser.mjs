// A real browser for the OAuth e2e: Debian's headless Chromium driven over the DevTools protocol (puppeteer-core,
// which never downloads a browser). It opens the authorization URL the SDK produced, fills in the dev sign-in, clicks
// Allow on the consent page, and stops at the redirect to the client (that request is intercepted, never sent).
import { existsSync } from "node:fs";

const CANDIDATES = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter(Boolean);
const STEP_TIMEOUT_MS = 20_000;

/** The Chromium executable, or null when none is installed (the check is then skipped with that reason). */
export function findChromium() {
  return CANDIDATES.find((path) => existsSync(path)) ?? null;
}

/** Returns a `browser(authorizationUrl) -> URLSearchParams` for the E2E provider, and a close(). */
export async function chromiumBrowser({ executablePath, tenant, subject, redirectUrl }) {
  const { default: puppeteer } = await import("puppeteer-core");
  const browser = await puppeteer.launch({
    executablePath,
    headless: true,
    // Root in CI and containers: Chromium's sandbox needs user namespaces it may not have.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
  const seen = { consentTenant: null, clientName: null };
  const signIn = async (authorizationUrl) => {
    const page = await browser.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    try {
      await page.setRequestInterception(true);
      let callback = null;
      page.on("request", (request) => {
        if (request.url().startsWith(redirectUrl)) {
          callback = new URL(request.url()).searchParams;
          request.abort().catch(() => {});
        } else {
          request.continue().catch(() => {});
        }
      });
      await page.goto(String(authorizationUrl), { waitUntil: "domcontentloaded" });
      await page.type('input[name="tenant"]', tenant);
      await page.type('input[name="subject"]', subject);
      await Promise.all([
        page.waitForNavigation({ waitUntil: "domcontentloaded" }),
        page.click('button[type="submit"]'),
      ]);
      const consent = await page.$("[data-tenant]");
      if (!consent) {
        const text = await page.evaluate(() => document.body?.textContent ?? "");
        throw new Error(`no consent page after sign-in (${page.url()}): ${text.slice(0, 300)}`);
      }
      seen.consentTenant = await page.$eval("[data-tenant]", (node) => node.textContent);
      seen.clientName = await page.$eval("h1", (node) => node.textContent);
      await Promise.all([
        page.waitForNavigation({ waitUntil: "domcontentloaded" }).catch(() => {}),
        page.click('button[name="decision"][value="approve"]'),
      ]);
      for (let i = 0; i < 50 && !callback; i++) await new Promise((resolve) => setTimeout(resolve, 100));
      if (!callback) throw new Error(`no redirect to the client; page at ${page.url()}`);
      return callback;
    } finally {
      await page.close().catch(() => {});
    }
  };
  return { signIn, seen, close: () => browser.close() };
}
