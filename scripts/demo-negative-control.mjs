#!/usr/bin/env node
// Negative control of the containment demo (`npm run demo:negative-control`; CI runs it): proof that the demo can
// fail. It copies src/ and the Worker's configuration into a temporary folder, patches the tenant boundary out of
// the copy — every tenant is routed to one shared object and the object's own-tenant check is removed, so B's
// search runs over A's index — runs the demo's setup and vector-index steps against that copy, and passes only if
// the demo exits non-zero AND reports a leak of A's canary (a failure for another reason proves nothing). The
// Worker in src/ is never changed and has no switch for this.
import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const TIMEOUT_MS = 5 * 60_000;

/** Each patch must apply exactly once: a stale control (the code moved on) fails loudly instead of testing nothing. */
const PATCHES = [
  {
    file: "src/tenant/route.ts",
    from: "env.TENANT_SERVER.idFromName(identity.tenant)",
    to: 'env.TENANT_SERVER.idFromName("negative-control-shared")',
  },
  {
    file: "src/tenant/tenant-server.ts",
    from: "const ours =\n      isTenantId(tenant) &&\n      this.env.TENANT_SERVER.idFromName(tenant).equals(this.ctx.id) &&\n      this.#bindTenant(tenant) === tenant;",
    to: "const ours = isTenantId(tenant) && Boolean(this.#bindTenant(tenant));",
  },
];

function brokenCopy() {
  const dir = mkdtempSync(join(tmpdir(), "tenant-mcp-broken-"));
  for (const entry of ["src", "wrangler.toml", "package.json", "tsconfig.json"]) {
    cpSync(join(root, entry), join(dir, entry), { recursive: true });
  }
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  for (const { file, from, to } of PATCHES) {
    const path = join(dir, file);
    const text = readFileSync(path, "utf8");
    const count = text.split(from).length - 1;
    if (count !== 1) throw new Error(`patch for ${file} matches ${count} times (expected once): update the control`);
    writeFileSync(path, text.replace(from, to));
  }
  return dir;
}

function runDemo(serverRoot, out) {
  return new Promise((resolvePromise) => {
    const child = spawn(
      process.execPath,
      [
        "--disable-warning=ExperimentalWarning",
        join(root, "scripts/demo.mjs"),
        "--server-root",
        serverRoot,
        "--steps",
        "2",
        "--out",
        out,
      ],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, CI: "1" } },
    );
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const timer = setTimeout(() => child.kill("SIGTERM"), TIMEOUT_MS);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, output });
    });
  });
}

const dir = brokenCopy();
let ok = false;
try {
  console.error(`negative control: patched copy in ${dir}; running the demo against it`);
  const out = join(dir, "out");
  const { code, signal, output } = await runDemo(dir, out);
  let report = null;
  try {
    report = JSON.parse(readFileSync(join(out, "containment.json"), "utf8"));
  } catch {
    // no report: counted as a failure of the control below
  }
  const leaking = (report?.cells ?? []).filter((cell) => cell.verdict === "fail" && (cell.counts?.leaked ?? 0) > 0);
  ok = code !== 0 && code !== null && leaking.length > 0;
  console.log(`demo exit code: ${code ?? signal}`);
  console.log(`cells reporting a leak: ${leaking.length}`);
  for (const cell of leaking) console.log(`  LEAK  ${cell.channel}: ${cell.attack} — ${cell.observed}`);
  if (!ok) {
    console.log("\n---- demo output (tail) ----");
    console.log(output.split("\n").slice(-40).join("\n"));
  }
  console.log(
    ok
      ? "negative control passed: the demo reports the leak of the broken copy and exits non-zero"
      : "negative control FAILED: the demo did not report a leak of the broken copy",
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(ok ? 0 : 1);
