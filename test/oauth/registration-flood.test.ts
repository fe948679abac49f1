import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { asFetch, REDIRECT } from "../helpers/oauth";

/** wrangler.toml [[ratelimits]] OAUTH_REGISTRATION_LIMITER: 30 registrations a minute. */
const LIMIT = 30;

describe("registration flood", () => {
  it("is bounded: beyond the limit registrations get 429 and store no client", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < LIMIT + 10; i++) {
      const response = await asFetch("/register", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          client_name: `flood ${i}`,
          redirect_uris: [REDIRECT],
          token_endpoint_auth_method: "none",
        }),
      });
      statuses.push(response.status);
      await response.body?.cancel();
    }
    const accepted = statuses.filter((status) => status === 201).length;
    expect(accepted).toBeLessThanOrEqual(LIMIT);
    expect(statuses.slice(-5)).toEqual([429, 429, 429, 429, 429]);
    const clients = await env.OAUTH_KV.list({ prefix: "client:" });
    expect(clients.keys.length).toBe(accepted);
    // The budget is per client address: another address still registers.
    const other = await asFetch("/register", {
      method: "POST",
      headers: { "content-type": "application/json", "cf-connecting-ip": "198.51.100.7" },
      body: JSON.stringify({ client_name: "other", redirect_uris: [REDIRECT], token_endpoint_auth_method: "none" }),
    });
    expect(other.status).toBe(201);
    await other.body?.cancel();
  });
});
