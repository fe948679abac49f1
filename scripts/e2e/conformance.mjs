// The MCP conformance runner (@modelcontextprotocol/conformance) against the server, one scenario per process.
// Every server scenario the runner lists is either run or skipped with a reason: the server serves none of the
// runner's test fixtures (tools such as test_simple_text, prompts, test:// resources), so scenarios that call them
// cannot pass. Every scenario that is run gates the e2e result.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { startProcess } from "./processes.mjs";

/** Scenarios that need only MCP basics (lifecycle, ping, tools/list, transport security, the HTTP transport). */
const ALWAYS = ["server-initialize", "ping", "tools-list", "dns-rebinding-protection", "server-sse-multiple-streams"];

/** Scenarios that only check the shape of a list or an empty result: they fit once the capability is declared. */
const IF_CAPABILITY = { "logging-set-level": "logging", "resources-list": "resources", "prompts-list": "prompts" };

/**
 * Known failures, each with the exact failure expected. As with the runner's own `--expected-failures` baseline, a
 * listed scenario that passes, or fails in another way, fails the e2e run, so that this list stays true.
 */
const EXPECTED_FAILURES = {};

const needsTool = (tool) => `needs the conformance test tool \`${tool}\``;
const SKIP = {
  "completion-complete": "needs the prompt `test_prompt_with_arguments` and the completions capability",
  "tools-call-simple-text": needsTool("test_simple_text"),
  "tools-call-image": needsTool("test_image_content"),
  "tools-call-audio": needsTool("test_audio_content"),
  "tools-call-embedded-resource": needsTool("test_embedded_resource"),
  "tools-call-mixed-content": needsTool("test_multiple_content_types"),
  "tools-call-with-logging": needsTool("test_tool_with_logging"),
  "tools-call-error": needsTool("test_error_handling"),
  "tools-call-with-progress": needsTool("test_tool_with_progress"),
  "tools-call-sampling": `${needsTool("test_sampling")} (server-to-client sampling)`,
  "tools-call-elicitation": `${needsTool("test_elicitation")} (server-to-client elicitation)`,
  "json-schema-2020-12": `${needsTool("json_schema_2020_12_tool")} (pending suite)`,
  "elicitation-sep1034-defaults": needsTool("test_elicitation_sep1034_defaults"),
  "elicitation-sep1330-enums": needsTool("test_elicitation_sep1330_enums"),
  "server-sse-polling": `${needsTool("test_reconnection")} (pending suite)`,
  "resources-read-text": "needs the test resource test://static-text",
  "resources-read-binary": "needs the test resource test://static-binary",
  "resources-templates-read": "needs the resource template test://template/{id}/data",
  "resources-subscribe": "needs resource subscriptions and the test resource test://watched-resource",
  "resources-unsubscribe": "needs resource subscriptions and the test resource test://watched-resource",
  "prompts-get-simple": "needs the prompt `test_simple_prompt`",
  "prompts-get-with-args": "needs the prompt `test_prompt_with_arguments`",
  "prompts-get-embedded-resource": "needs the prompt `test_prompt_with_embedded_resource`",
  "prompts-get-with-image": "needs the prompt `test_prompt_with_image`",
};

const cli = (root) => join(root, "node_modules/@modelcontextprotocol/conformance/dist/index.js");

/** The server scenarios this conformance version offers (`conformance list --server`). */
export function listServerScenarios(root) {
  const out = execFileSync(process.execPath, [cli(root), "list", "--server"], { encoding: "utf8", timeout: 30_000 });
  return [...out.matchAll(/^\s+- (\S+)/gm)].map((match) => match[1]);
}

/**
 * Splits the listed scenarios into the ones to run and the ones to skip (with reasons), given the capabilities the
 * server declared at initialize (null if unknown). A scenario this harness does not know is skipped and reported.
 */
export function planScenarios(listed, capabilities) {
  const run = [];
  const skipped = [];
  for (const name of listed) {
    const capability = IF_CAPABILITY[name];
    if (ALWAYS.includes(name)) run.push(name);
    else if (capability && capabilities?.[capability]) run.push(name);
    else if (capability) skipped.push({ name, reason: `the server declares no \`${capability}\` capability` });
    else skipped.push({ name, reason: SKIP[name] ?? "not classified by scripts/e2e/conformance.mjs (new scenario?)" });
  }
  for (const name of ALWAYS) {
    if (!listed.includes(name)) run.push(name); // let the runner itself report a required scenario that vanished
  }
  return { run, skipped };
}

/**
 * Runs one scenario. It passes when the runner exits 0 and its checks.json has no FAILURE (WARNING and INFO checks
 * are reported but do not fail it, as in the runner's own verdict).
 */
export async function runScenario({ root, url, name, outDir, timeoutMs }) {
  const dir = join(outDir, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const logFile = join(dir, "runner.log");
  const runner = startProcess(process.execPath, [cli(root), "server", "--url", url, "--scenario", name, "-o", dir], {
    logFile,
    cwd: dir,
  });
  const timer = new Promise((resolve) => setTimeout(() => resolve(null), timeoutMs).unref());
  const exit = await Promise.race([runner.exited, timer]);
  await runner.stop();
  if (!exit) return { name, passed: false, error: `timed out after ${timeoutMs / 1000} s`, logFile, checks: [] };
  const checks = readChecks(dir);
  const failures = checks.filter((check) => check.status === "FAILURE");
  const count = (status) => checks.filter((check) => check.status === status).length;
  const passed = exit.code === 0 && checks.length > 0 && failures.length === 0;
  return {
    name,
    passed,
    exitCode: exit.code,
    checksPassed: count("SUCCESS"),
    checksFailed: failures.length,
    warnings: count("WARNING"),
    error: passed
      ? undefined
      : failures.map((check) => `${check.name}: ${check.errorMessage ?? check.description}`).join("; ") ||
        `runner exited ${exit.code} without a FAILURE check`,
    logFile,
    checks,
  };
}

/** The e2e status of a scenario result: passed, failed, or xfail (failed exactly as EXPECTED_FAILURES says). */
export function verdict(result) {
  const expected = EXPECTED_FAILURES[result.name];
  if (!expected && result.passed) return { status: "passed", detail: summary(result) };
  if (!expected) return { status: "failed", detail: result.error };
  if (result.passed) {
    return { status: "failed", detail: "passes now: remove it from EXPECTED_FAILURES in scripts/e2e/conformance.mjs" };
  }
  if (expected.signature.test(result.error ?? "")) return { status: "xfail", detail: expected.reason };
  return { status: "failed", detail: `${result.error} (expected failure, but not the one expected)` };
}

function summary(result) {
  const counts = `${result.checksPassed} check(s) passed, ${result.warnings} warning(s)`;
  // Shows which guard refused the rebinding request: ERR_HOST_FORBIDDEN means the proxy passed the bad Host through
  // and the server's own Host check caught it (the bad Origin alone would give ERR_ORIGIN_FORBIDDEN).
  const rejected = result.checks.find((check) => check.id === "localhost-host-rebinding-rejected")?.details;
  if (!rejected) return counts;
  return `${counts}; Host ${rejected.hostHeader} refused with ${rejected.statusCode} ${rejected.body?.error?.data?.code}`;
}

function readChecks(dir) {
  // The runner writes <dir>/server-<scenario>-<timestamp>/checks.json.
  const resultDir = readdirSync(dir, { withFileTypes: true }).find((entry) => entry.isDirectory());
  if (!resultDir) return [];
  try {
    return JSON.parse(readFileSync(join(dir, resultDir.name, "checks.json"), "utf8"));
  } catch {
    return [];
  }
}
