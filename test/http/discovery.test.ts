import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { mediaType } from "../helpers/http";
import { initializeBody, mcpFetch } from "../helpers/mcp-http";
import { BASE, mintToken } from "../helpers/tokens";

const METADATA_ROOT = `${BASE}/.well-known/oauth-protected-resource`;
const METADATA_MCP = `${BASE}/.well-known/oauth-protected-resource/mcp`;

/** Splits `Bearer a="x", b="y"` into { a: "x", b: "y" }. */
function challengeParams(header: string | null): Record<string, string> {
  expect(header).toMatch(/^Bearer /);
  const params: Record<string, string> = {};
  for (const match of (header ?? "").matchAll(/([a-z_]+)="([^"]*)"/g)) {
    const [, name, value] = match;
    if (name !== undefined && value !== undefined) params[name] = value;
  }
  return params;
}

describe("RFC 9728 protected resource metadata", () => {
  it.each([METADATA_ROOT, METADATA_MCP])("serves %s without a token", async (url) => {
    const response = await exports.default.fetch(new Request(url));
    expect(response.status).toBe(200);
    expect(mediaType(response)).toBe("application/json");
    const metadata = (await response.json()) as Record<string, unknown>;
    expect(metadata.resource).toBe("https://kb.test/mcp");
    // The built-in authorization server first (a client following the 401 signs in there), then the external issuer.
    expect(metadata.authorization_servers).toEqual(["https://kb.test", "https://issuer.test/"]);
    expect(metadata.scopes_supported).toContain("mcp");
    expect(metadata.bearer_methods_supported).toEqual(["header"]);
    // Only asymmetric algorithms are advertised.
    expect(metadata.resource_signing_alg_values_supported).not.toContain("HS256");
    expect(metadata.resource_signing_alg_values_supported).not.toContain("none");
    // Public and tenant-neutral: nothing in it depends on who asks.
    expect(JSON.stringify(metadata)).not.toMatch(/tenant_id|acme/);
  });

  it("serves the same document at both URLs, even to a caller with a token", async () => {
    const token = await mintToken({ tenant: "discovery-same" });
    const root = await exports.default.fetch(
      new Request(METADATA_ROOT, { headers: { authorization: `Bearer ${token}` } }),
    );
    const mcp = await exports.default.fetch(new Request(METADATA_MCP));
    expect(root.status).toBe(200);
    expect(await root.json()).toEqual(await mcp.json());
  });

  it("points the 401 from /mcp at the path-suffixed metadata URL", async () => {
    const response = await mcpFetch({ method: "POST", body: initializeBody() });
    expect(response.status).toBe(401);
    const params = challengeParams(response.headers.get("www-authenticate"));
    expect(params.resource_metadata).toBe(METADATA_MCP);
    expect(params.scope).toBe("mcp");
    // No token was sent, so RFC 6750 says no error code in the challenge.
    expect(params.error).toBeUndefined();

    // The advertised URL really serves the metadata of this resource.
    const metadata = await exports.default.fetch(new Request(params.resource_metadata ?? ""));
    expect(metadata.status).toBe(200);
    expect(await metadata.json()).toMatchObject({ resource: "https://kb.test/mcp" });
  });

  it("names invalid_token in the challenge when a bad token was sent, with the same metadata URL", async () => {
    const response = await mcpFetch({ method: "POST", token: "not.a.jwt", body: initializeBody() });
    expect(response.status).toBe(401);
    const params = challengeParams(response.headers.get("www-authenticate"));
    expect(params.error).toBe("invalid_token");
    expect(params.resource_metadata).toBe(METADATA_MCP);
  });

  it("answers /healthz without a token", async () => {
    const response = await exports.default.fetch(new Request(`${BASE}/healthz`));
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ ok: true });
    expect(response.headers.get("cache-control")).toBe("no-store");
  });
});
