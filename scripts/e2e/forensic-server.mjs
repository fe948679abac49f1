// The server of the forensics e2e check: one `wrangler dev` at a time on one loopback port, started on a folder and
// with master key epochs chosen per start, stopped gracefully and then for sure.

import { rawHttp } from "./forensic-http.mjs";
import { freePort } from "./ports.mjs";
import { startWranglerDev, waitForHealthy } from "./wrangler.mjs";

const HEALTHY_TIMEOUT_MS = 120_000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One wrangler dev at a time, on a folder chosen per start; stopped gracefully and then for sure. */
export class DevServer {
  #handle = null;

  constructor({ root, work, logFile, jwks }) {
    this.options = { root, work, logFile, jwks };
  }

  /** One port for every start: tokens carry its URL as audience. */
  async init() {
    this.port = await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    this.resource = `${this.base}/mcp`;
  }

  async start(persistTo, epochVars) {
    await this.stop(); // a check that failed half-way may have left the previous one running
    const inspectorPort = await freePort([this.port]);
    this.#handle = startWranglerDev({
      root: this.options.root,
      workDir: this.options.work,
      port: this.port,
      inspectorPort,
      logFile: this.options.logFile,
      persistTo,
      vars: {
        MCP_RESOURCE: this.resource,
        ALLOWED_HOSTS: "127.0.0.1,localhost",
        ALLOWED_ORIGINS: this.base,
        AUTH_JWKS: this.options.jwks,
        ...epochVars,
      },
    });
    await waitForHealthy(this.base, this.#handle, HEALTHY_TIMEOUT_MS);
  }

  /** SIGINT to wrangler (it stops workerd), bounded waits, then the group is signalled until none of it is left. */
  async stop() {
    const handle = this.#handle;
    this.#handle = null;
    if (!handle) return;
    signal(handle.pid, "SIGINT", false);
    await Promise.race([handle.exited, sleep(15_000)]);
    for (let i = 0; i < 50 && groupAlive(handle.pid); i++) await sleep(100);
    await handle.stop(); // SIGTERM, then SIGKILL, to whatever of the group is left; deregisters it
    for (let i = 0; i < 100 && groupAlive(handle.pid); i++) {
      signal(handle.pid, "SIGKILL", true);
      await sleep(100);
    }
    if (groupAlive(handle.pid)) throw new Error(`process group ${handle.pid} still alive`);
  }

  admin(token) {
    return async (method, path, body) => {
      const got = await rawHttp(`${this.base}/admin${path}`, token, {
        method,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      let parsed = null;
      try {
        parsed = JSON.parse(got.text);
      } catch {
        // not JSON: the text is reported
      }
      return { ...got, body: parsed };
    };
  }
}

function signal(pid, name, group) {
  try {
    process.kill(group ? -pid : pid, name);
  } catch {
    // ESRCH: already gone
  }
}

function groupAlive(pid) {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (error) {
    return error.code === "EPERM";
  }
}
