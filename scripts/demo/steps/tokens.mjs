// Step 6: no inbound token, or any part of it, reaches a downstream request. A imports a document from an
// allow-listed downstream (the demo's loopback recorder, reached through the demo host's outbound hook) while
// sending credential-looking headers; every recorded outbound request is scanned for A's token, its three parts,
// its jti and the client's header values. The one credential downstream sees is an exchanged token: signed by the
// server (verified against its JWKS), A's tenant, the downstream audience. B cannot obtain one for A's downstream.
import { createRemoteJWKSet, decodeJwt, jwtVerify } from "jose";

export const DOWNSTREAM_ORIGIN = "https://docs.downstream.example";
export const DOWNSTREAM_RESOURCE = `${DOWNSTREAM_ORIGIN}/v1`;
export const DOWNSTREAM_AUDIENCE = "containment-demo-downstream";
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token";

const CLIENT_HEADERS = {
  cookie: "session=client-cookie-6b1f",
  "x-api-key": "client-api-key-3c9a",
  "x-client-secret": "client-secret-77d2",
  "proxy-authorization": "Basic Y2xpZW50OnByb3h5",
};

/** Whether any claim value names another tenant or the inbound audience (an exchanged token is for A and its target only). */
function mentionsOther(claims, others) {
  const text = JSON.stringify(claims);
  return others.filter(Boolean).some((other) => text.includes(`"${other}"`));
}

/** Every string of the inbound credentials that must never be seen downstream. */
function secretsOf(token) {
  const parts = token.split(".");
  const { jti } = decodeJwt(token);
  return [token, ...parts, ...(typeof jti === "string" ? [jti] : []), ...Object.values(CLIENT_HEADERS)];
}

export async function tokens(ctx) {
  const { matrix, tenants } = ctx;
  const channel = "tokens";
  const policy = {
    origins: [DOWNSTREAM_ORIGIN],
    resources: [{ resource: DOWNSTREAM_RESOURCE, audience: DOWNSTREAM_AUDIENCE, scopes: ["docs.read"] }],
  };
  const set = await ctx.admin("PUT", `/admin/tenants/${tenants.a}/egress`, policy);
  if (set.status !== 200) throw new Error(`setting A's egress policy: HTTP ${set.status} ${set.text.slice(0, 200)}`);
  const jwks = createRemoteJWKSet(new URL(`${ctx.base}/.well-known/jwks.json`));
  const checkExchanged = async (token) => {
    const { payload } = await jwtVerify(token, jwks, { audience: DOWNSTREAM_AUDIENCE });
    return payload;
  };

  if (ctx.local?.downstream) {
    const recorded = ctx.local.downstream.requests;
    await matrix.cell(
      channel,
      "A's token or headers in downstream requests",
      "none; only an exchanged token",
      async () => {
        const from = recorded.length;
        const answer = await ctx.a.raw({
          rpc: {
            method: "tools/call",
            params: { name: "import_url", arguments: { url: `${DOWNSTREAM_RESOURCE}/report.txt`, id: "a-imported" } },
          },
          headers: CLIENT_HEADERS,
        });
        const imported = answer.json?.result;
        const outbound = recorded.slice(from);
        const secrets = secretsOf(ctx.a.token);
        const leaked = outbound.filter((request) => secrets.some((secret) => JSON.stringify(request).includes(secret)));
        const evidence = [
          `import_url: HTTP ${answer.status} ${JSON.stringify(imported?.structuredContent ?? imported).slice(0, 200)}`,
        ];
        let exchanged = 0;
        for (const request of outbound) {
          const bearer = /^Bearer (.+)$/.exec(request.headers.authorization ?? "")?.[1];
          let claims = null;
          if (bearer) {
            claims = await checkExchanged(bearer).catch((error) => ({ error: error.message }));
            if (claims.tenant_id === tenants.a && claims.aud === DOWNSTREAM_AUDIENCE && !claims.error) exchanged++;
          }
          evidence.push(
            `${request.method} ${request.url} headers [${Object.keys(request.headers).join(", ")}] bearer claims ${JSON.stringify(claims)}`,
          );
        }
        return {
          ok:
            answer.status === 200 &&
            !imported?.isError &&
            outbound.length > 0 &&
            leaked.length === 0 &&
            exchanged === outbound.length,
          observed: `${outbound.length} outbound request(s) recorded, ${leaked.length} carrying an inbound secret, ${exchanged} with an exchanged token of A`,
          counts: { outbound: outbound.length, leaked: leaked.length, exchanged },
          evidence,
        };
      },
    );

    await ctx.attacks(channel, "B imports from A's allow-listed downstream", "refused (egress denied), nothing sent", [
      async () => {
        const from = recorded.length;
        const answer = await ctx.b.call("modern", "import_url", { url: `${DOWNSTREAM_RESOURCE}/report.txt` });
        const sent = recorded.length - from;
        return {
          text: answer.text,
          ok: answer.refused && answer.code === "ERR_EGRESS_DENIED" && sent === 0,
          note: `B import_url: ${answer.refused ? answer.code : "answered"}, ${sent} outbound request(s)`,
        };
      },
    ]);
  } else {
    matrix.skip(
      channel,
      "A's token or headers in downstream requests",
      "needs a downstream the deployment can reach and record; the demo's recorder is loopback-only (run the demo locally)",
    );
  }

  const exchange = async (who, target) => {
    const response = await fetch(`${ctx.base}/oauth/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: TOKEN_EXCHANGE,
        subject_token: who.token,
        subject_token_type: ACCESS_TOKEN,
        ...target,
      }),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await response.text();
    return { status: response.status, text, json: JSON.parse(text || "null") };
  };

  await matrix.cell(channel, "token exchange for A", "A's tenant and the downstream audience only", async () => {
    const answer = await exchange(ctx.a, { resource: DOWNSTREAM_RESOURCE });
    const token = answer.json?.access_token;
    const claims = token ? await checkExchanged(token) : {};
    const secrets = secretsOf(ctx.a.token);
    const carries = secrets.filter((secret) => answer.text.includes(secret)).length;
    const ok =
      answer.status === 200 &&
      claims.tenant_id === tenants.a &&
      claims.aud === DOWNSTREAM_AUDIENCE &&
      claims.sub === ctx.a.subject &&
      claims.scope === "docs.read" &&
      !mentionsOther(claims, [tenants.b, tenants.control, `${ctx.base}/mcp`]) &&
      carries === 0;
    return {
      ok,
      observed: `HTTP ${answer.status}; tenant_id ${claims.tenant_id}, aud ${claims.aud}, scope "${claims.scope}"; ${carries} inbound secret(s) in the answer`,
      counts: { carries },
      evidence: [`claims: ${JSON.stringify(claims)}`],
    };
  });

  await ctx.attacks(channel, "token exchange by B for A's downstream", "refused (invalid_target)", [
    async () => {
      const answer = await exchange(ctx.b, { resource: DOWNSTREAM_RESOURCE });
      return {
        text: answer.text,
        ok: answer.status === 400 && answer.json?.error === "invalid_target",
        note: `B: HTTP ${answer.status} ${answer.json?.error}`,
      };
    },
    async () => {
      const answer = await exchange(ctx.b, { audience: DOWNSTREAM_AUDIENCE });
      return {
        text: answer.text,
        ok: answer.status === 400 && answer.json?.error === "invalid_target",
        note: `B by audience: HTTP ${answer.status} ${answer.json?.error}`,
      };
    },
  ]);
}
