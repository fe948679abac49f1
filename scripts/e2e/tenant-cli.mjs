// The operator CLI (`npm run tenant`) against the running server, as an operator runs it: a child process with
// ADMIN_TOKEN in its environment and --url, its JSON output parsed.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const CLI_TIMEOUT_MS = 30_000;

export async function tenantCliChecks({ report, root, base, adminToken, tenant }) {
  const cli = async (...args) => {
    const { stdout } = await run(process.execPath, [join(root, "scripts/tenant.mjs"), ...args, "--url", base], {
      env: { ...process.env, ADMIN_TOKEN: adminToken },
      timeout: CLI_TIMEOUT_MS,
    });
    return JSON.parse(stdout);
  };
  const group = "tenant CLI";
  await report.check(
    group,
    `egress ${tenant} --allow: origins set, downstream resources kept, status agrees`,
    async () => {
      const set = await cli(
        "egress",
        tenant,
        "--allow",
        "https://docs.example.com/a/b?c=1",
        "--allow",
        "https://wiki.example.org",
      );
      const want = ["https://docs.example.com", "https://wiki.example.org"];
      if (JSON.stringify(set.origins) !== JSON.stringify(want)) throw new Error(`set: ${JSON.stringify(set)}`);
      const shown = await cli("egress", tenant);
      if (JSON.stringify(shown.origins) !== JSON.stringify(want)) throw new Error(`shown: ${JSON.stringify(shown)}`);
      const status = await cli("status", tenant);
      if (JSON.stringify(status.egress?.origins) !== JSON.stringify(want)) throw new Error("status disagrees");
      return want.join(", ");
    },
  );
  await report.check(group, `egress ${tenant} --clear: no origin left`, async () => {
    const cleared = await cli("egress", tenant, "--clear");
    if (cleared.origins.length !== 0) throw new Error(JSON.stringify(cleared));
    return "origins []";
  });
  await report.check(group, "egress of an unknown tenant: exit 1, HTTP 404, nothing created", async () => {
    const unknown = `never-${Date.now().toString(36)}`;
    const refused = await cli("egress", unknown, "--allow", "https://x.example").then(
      () => null,
      (error) => error,
    );
    if (refused?.code !== 1 || !/HTTP 404/.test(refused.stderr)) {
      throw new Error(`expected exit 1 with HTTP 404, got ${refused?.code}: ${refused?.stderr}`);
    }
    const list = await cli("list");
    if (JSON.stringify(list).includes(unknown)) throw new Error("the unknown tenant was registered");
    return "404, not in the registry";
  });
  await report.check(group, "egress --allow http://…: refused before any request", async () => {
    const refused = await cli("egress", tenant, "--allow", "http://plain.example").then(
      () => null,
      (error) => error,
    );
    if (refused?.code !== 1 || !/not an https URL/.test(refused.stderr)) throw new Error("accepted");
    return "exit 1";
  });
}
