#!/usr/bin/env node
// `npm start [-- --port N] [--host NAME]`: wrangler dev with the resource URL, allowed hosts and origins all derived
// from one address, so a token minted by `npm run token` (which reads the address recorded here) has the audience
// the server expects. Other arguments are passed to wrangler dev as they are.
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { devKeyPaths } from "./dev-keys.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** Where the address of the last `npm start` is recorded for `npm run token` and `npm run tenant` (git-ignored). */
const DEV_SERVER_FILE = join(devKeyPaths().dir, "dev-server.json");

/** The vars that must agree with the address the server listens on. Pure: tested by the e2e run. */
export function devServerVars({ port, host }) {
  const origin = `http://${host}:${port}`;
  const origins = new Set([origin, `http://localhost:${port}`, `http://127.0.0.1:${port}`]);
  const hosts = new Set(["localhost", "127.0.0.1", "[::1]", host]);
  return {
    MCP_RESOURCE: `${origin}/mcp`,
    ALLOWED_ORIGINS: [...origins].join(","),
    ALLOWED_HOSTS: [...hosts].join(","),
  };
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  const { values, tokens } = parseArgs({
    strict: false,
    tokens: true,
    options: { port: { type: "string", default: "8787" }, host: { type: "string", default: "localhost" } },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    console.error(`start: --port must be a TCP port, not ${values.port}`);
    process.exit(2);
  }
  if (!/^[a-z0-9.-]{1,253}$/i.test(values.host)) {
    console.error(`start: --host must be a host name or an IPv4 address, not ${values.host}`);
    process.exit(2);
  }
  const vars = devServerVars({ port, host: values.host });
  const passed = tokens
    .filter((t) => !(t.kind === "option" && (t.name === "port" || t.name === "host")))
    .flatMap((t) => (t.kind === "option" ? [t.rawName, ...(t.value === undefined ? [] : [t.value])] : [t.value]));
  mkdirSync(dirname(DEV_SERVER_FILE), { recursive: true });
  writeFileSync(DEV_SERVER_FILE, `${JSON.stringify({ resource: vars.MCP_RESOURCE }, null, 2)}\n`);
  const args = [
    "dev",
    "--port",
    String(port),
    ...Object.entries(vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
    ...passed,
  ];
  console.error(`start: serving ${vars.MCP_RESOURCE} (tokens from \`npm run token\` carry this audience)`);
  const child = spawn(join(root, "node_modules/.bin/wrangler"), args, { stdio: "inherit", cwd: root });
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => child.kill(signal));
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}
