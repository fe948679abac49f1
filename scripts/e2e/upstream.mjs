// A real OpenID Connect provider on loopback (oidc-provider from npm, its development interactions: "any login"),
// as the upstream identity of the built-in authorization server: the production sign-in path, end to end.
import { createServer } from "node:http";
import Provider from "oidc-provider";
import { cookieFetch } from "./cookie-fetch.mjs";

const MAX_STEPS = 20;

export async function startOidcProvider({ redirectUri }) {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const clientId = "tenant-mcp-kb";
  const clientSecret = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64url");
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    pkce: { required: () => true },
    claims: { openid: ["sub"], email: ["email", "email_verified"] },
    // Any login is an account whose verified email is the login itself (dave@unmapped.test, erin@e2e-corp.test).
    findAccount: async (_ctx, id) => ({
      accountId: id,
      claims: async () => ({ sub: id, email: id, email_verified: true }),
    }),
    features: { devInteractions: { enabled: true } },
    // The scope's claims (email, email_verified) go into the ID token itself, which is what we verify.
    conformIdTokenClaims: false,
    cookies: { keys: [Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url")] },
  });
  // The development interactions warn on start; nothing else is logged.
  server.on("request", provider.callback());
  return { issuer, clientId, clientSecret, close: () => new Promise((resolve) => server.close(resolve)) };
}

/**
 * A browser for the upstream path: the sign-in page's "organization" link, the provider's login and consent forms
 * (login = `login`), then our consent page (Allow). Returns the client's callback parameters, or throws with the
 * text of the page where the flow stopped (e.g. the "no tenant" refusal).
 */
export function upstreamBrowser({ login, seen = {} }) {
  return async (authorizationUrl) => {
    const send = cookieFetch();
    const clientOrigin = new URL(authorizationUrl).origin;
    let response = await send(authorizationUrl);
    let url = new URL(authorizationUrl);
    for (let step = 0; step < MAX_STEPS; step++) {
      if ([301, 302, 303, 307].includes(response.status)) {
        const next = new URL(response.headers.get("location") ?? "", url);
        if (next.port === "1") return next.searchParams; // the client's redirect URI: stop, as a browser hands it over
        url = next;
        response = await send(url);
        continue;
      }
      const html = await response.text();
      if (response.status !== 200) throw new Error(`HTTP ${response.status} at ${url.pathname}: ${text(html)}`);
      const post = (action, fields) =>
        send(new URL(action.replaceAll("&#38;", "&").replaceAll("&amp;", "&"), url), {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded", origin: url.origin },
          body: new URLSearchParams(fields).toString(),
        });
      const upstreamLink = /<a id="upstream" href="([^"]+)"/.exec(html)?.[1];
      const action = /<form[^>]*action="([^"]+)"[^>]*method="post"|<form method="post" action="([^"]+)"/.exec(html);
      const formAction = action?.[1] ?? action?.[2];
      if (html.includes('name="handle"')) {
        seen.tenant = /data-tenant>([^<]+)</.exec(html)?.[1];
        const handle = /name="handle" value="([^"]+)"/.exec(html)?.[1];
        const fields = new URLSearchParams({ step: "consent", handle, decision: "approve" });
        for (const m of html.matchAll(/name="scope" value="([^"]+)" checked/g)) fields.append("scope", m[1]);
        response = await send(new URL("/authorize", clientOrigin), {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded", origin: clientOrigin },
          body: fields.toString(),
        });
      } else if (upstreamLink) {
        url = new URL(upstreamLink.replaceAll("&#38;", "&"), url);
        response = await send(url);
      } else if (html.includes('name="prompt" value="login"') && formAction) {
        response = await post(formAction, { prompt: "login", login, password: "any" });
      } else if (html.includes('name="prompt" value="consent"') && formAction) {
        response = await post(formAction, { prompt: "consent" });
      } else {
        throw new Error(`stopped at ${url.pathname}: ${text(html)}`);
      }
    }
    throw new Error(`no redirect to the client after ${MAX_STEPS} steps`);
  };
}

function text(html) {
  return html
    .replace(/<style[\s\S]*?<\/style>/g, "")
    .replace(/<[^>]+>/g, " ")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 300);
}
