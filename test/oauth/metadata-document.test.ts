import { afterEach, describe, expect, it, vi } from "vitest";
import { asFetch, authorize, authorizeQuery, kvKeys, pkce, REDIRECT, redeem, signIn, whoami } from "../helpers/oauth";
import { RESOURCE } from "../helpers/tokens";

/**
 * Client ID Metadata Documents: the client_id is an https URL whose document the authorization server fetches.
 * The documents are served by a stub of the Worker's outbound fetch (in production, global_fetch_strictly_public
 * refuses private and loopback destinations; the e2e serves a document on loopback, docs/auth.md).
 */
const CLIENT_ID = "https://app.example/oauth/client.json";

function serveDocuments(documents: Record<string, unknown>) {
  vi.spyOn(globalThis, "fetch").mockImplementation(async (input) => {
    const url = input instanceof Request ? input.url : String(input);
    const document = documents[url];
    if (document === undefined) return new Response("not found", { status: 404 });
    return new Response(JSON.stringify(document), {
      headers: { "content-type": "application/json", "cache-control": "no-store" },
    });
  });
}

const goodDocument = (overrides: Record<string, unknown> = {}) => ({
  client_id: CLIENT_ID,
  client_name: "Example App",
  redirect_uris: [REDIRECT],
  token_endpoint_auth_method: "none",
  grant_types: ["authorization_code", "refresh_token"],
  response_types: ["code"],
  ...overrides,
});

afterEach(() => {
  vi.restoreAllMocks();
});

describe("Client ID Metadata Document clients", () => {
  it("authorize with the document's name and verified domain, and get tokens for the chosen tenant", async () => {
    serveDocuments({ [CLIENT_ID]: goodDocument() });
    const verifier = await pkce();
    const query = authorizeQuery({ clientId: CLIENT_ID, pkce: verifier });
    const page = await asFetch(`/authorize?${query}`);
    expect(page.status).toBe(200);
    const { code } = await authorize({ clientId: CLIENT_ID, pkce: verifier, tenant: "oa-cimd" });
    const answer = await redeem({
      grant_type: "authorization_code",
      code,
      redirect_uri: REDIRECT,
      client_id: CLIENT_ID,
      code_verifier: verifier.verifier,
      resource: RESOURCE,
    });
    expect(answer.status).toBe(200);
    expect(await whoami(String(answer.body.access_token))).toMatchObject({ identity: { tenant: "oa-cimd" } });
  });

  it("shows the verified domain on the consent page", async () => {
    serveDocuments({ [CLIENT_ID]: goodDocument() });
    const consent = await signIn(authorizeQuery({ clientId: CLIENT_ID, pkce: await pkce() }), "oa-cimd-page", "al");
    expect(consent.html).toContain("Published by <strong>app.example</strong>");
  });

  it.each([
    [
      "a document whose client_id differs from its URL",
      goodDocument({ client_id: "https://other.example/client.json" }),
    ],
    [
      "a document without the requested redirect (foreign redirect)",
      goodDocument({ redirect_uris: ["https://evil.test/cb"] }),
    ],
    ["a document with a secret", goodDocument({ client_secret: "s3cret" })],
  ])("%s is refused on the page, never redirected; no grant", async (_label, document) => {
    serveDocuments({ [CLIENT_ID]: document });
    const page = await asFetch(`/authorize?${authorizeQuery({ clientId: CLIENT_ID, pkce: await pkce() })}`);
    expect(page.status).toBe(400);
    expect(page.headers.get("location")).toBeNull();
    const signin = await asFetch(`/authorize?${authorizeQuery({ clientId: CLIENT_ID, pkce: await pkce() })}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "step=signin&tenant=oa-cimd-bad&subject=alice",
    });
    expect(signin.status).toBe(400);
    expect(await kvKeys("grant:oa-cimd-bad/")).toEqual([]);
  });
});
