import { describe, expect, it } from "vitest";
import wranglerToml from "../../wrangler.toml?raw";

/** The deployed configuration, read as text (there is no TOML parser in the Worker runtime; the checks are exact). */
function section(name: string): string {
  const start = wranglerToml.indexOf(`\n[${name}]\n`);
  expect(start, `[${name}] missing`).toBeGreaterThanOrEqual(0);
  const rest = wranglerToml.slice(start + name.length + 4);
  const end = rest.search(/\n\[/);
  return end < 0 ? rest : rest.slice(0, end);
}

describe("wrangler.toml: the platform's logs keep no credential-bearing URLs (issue 11 item 9)", () => {
  for (const env of ["", "env.production."]) {
    it(`${env || "top level"}: invocation logs and traces off, query strings redacted, own logs kept`, () => {
      expect(section(`${env}observability`)).toMatch(/^enabled = true$/m);
      expect(section(`${env}observability`)).toMatch(/^redact_query_string = true$/m);
      expect(section(`${env}observability.logs`)).toMatch(/^invocation_logs = false$/m);
      expect(section(`${env}observability.logs`)).toMatch(/^enabled = true$/m);
      expect(section(`${env}observability.traces`)).toMatch(/^enabled = false$/m);
    });
  }
});
