#!/usr/bin/env node
// Operator CLI for the platform-admin API. Targets the local dev server by default.
//   npm run tenant -- status <tenant>            key versions and epochs, counts, rotation, shred receipt
//   npm run tenant -- rotate <tenant>            new data key version; old data re-encrypted in the background
//   npm run tenant -- offboard <tenant> --yes    crypto-shred: keys and sessions destroyed now, data purged after
//   npm run tenant -- placement <tenant> local|vectorize|default
//                                                where its vectors live: local (sealed in its object), the Vectorize
//                                                index VECTOR_PLACEMENT gives it, or whatever the configuration says
//   npm run tenant -- list                       tenants and their states
//   npm run tenant -- rewrap-master              rewrap every tenant's keys under MASTER_KEY_EPOCH (then GET progress)
//   npm run tenant -- map-domain <domain> <tenant>   users whose verified email is @<domain> sign in to <tenant>
//   npm run tenant -- unmap-domain <domain>      remove that mapping;  npm run tenant -- domains   list them
//   npm run tenant -- egress <tenant> [--allow URL]... [--clear]
//                                                the origins server code may fetch for the tenant (import_url): shown,
//                                                replaced by the --allow URLs' origins, or emptied; downstream
//                                                resources of the policy are kept as they are
// Options: --url http://localhost:8787 (another deployment: --url https://kb.example.com and ADMIN_TOKEN=... in the
// environment), --wait (poll until the background job finishes).
import { parseArgs } from "node:util";
import { devServerResource, mintDevToken } from "./token.mjs";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    // The last `npm start` records its address (scripts/start.mjs); 8787 otherwise.
    url: { type: "string", default: new URL(devServerResource() ?? "http://localhost:8787").origin },
    yes: { type: "boolean", default: false },
    wait: { type: "boolean", default: false },
    allow: { type: "string", multiple: true, default: [] },
    clear: { type: "boolean", default: false },
  },
});
const [command, tenant] = positionals;
const base = values.url.replace(/\/+$/, "");

async function token() {
  if (process.env.ADMIN_TOKEN) return process.env.ADMIN_TOKEN;
  const host = new URL(base).hostname;
  if (host !== "localhost" && host !== "127.0.0.1") {
    throw new Error("set ADMIN_TOKEN (a platform:admin token for this deployment's admin audience)");
  }
  // Local dev server: a dev-issuer admin token (the dev issuer is refused in production).
  return mintDevToken({ admin: true, sub: "dev-operator", ttl: 300, aud: `${new URL(base).origin}/admin` });
}

async function call(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${await token()}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  if (!response.ok) {
    throw new Error(
      `${method} ${path}: HTTP ${response.status} ${typeof parsed === "string" ? parsed : JSON.stringify(parsed)}`,
    );
  }
  return parsed;
}

function requireTenant() {
  if (!/^[a-z0-9][a-z0-9-]{1,62}$/.test(tenant ?? "")) throw new Error(`usage: npm run tenant -- ${command} <tenant>`);
  return tenant;
}

async function waitFor(done, read) {
  for (let i = 0; i < 600; i++) {
    const state = await read();
    if (done(state)) return state;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  throw new Error("gave up waiting after 10 minutes");
}

/** An https origin, as the egress policy stores it (the server refuses anything else too). */
function originOf(url) {
  if (!URL.canParse(url) || new URL(url).protocol !== "https:") throw new Error(`egress: not an https URL: ${url}`);
  return new URL(url).origin;
}

const print = (value) => console.log(JSON.stringify(value, null, 2));

try {
  switch (command) {
    case "status":
      print(await call("GET", `/admin/tenants/${requireTenant()}`));
      break;
    case "list":
      print(await call("GET", "/admin/tenants"));
      break;
    case "rotate": {
      const t = requireTenant();
      print(await call("POST", `/admin/tenants/${t}/rotate`));
      if (values.wait)
        print(
          await waitFor(
            (s) => s.rotation?.completedAt,
            () => call("GET", `/admin/tenants/${t}`),
          ),
        );
      break;
    }
    case "offboard": {
      const t = requireTenant();
      if (!values.yes) {
        throw new Error(`offboarding destroys ${t}'s keys and data for good; repeat with --yes to confirm`);
      }
      print(await call("POST", `/admin/tenants/${t}/offboard`, { confirm: t }));
      if (values.wait)
        print(
          await waitFor(
            (s) => s.receipt?.completedAt,
            () => call("GET", `/admin/tenants/${t}`),
          ),
        );
      break;
    }
    case "placement": {
      const t = requireTenant();
      const choice = positionals[2];
      if (!["local", "vectorize", "default"].includes(choice ?? "")) {
        throw new Error("usage: npm run tenant -- placement <tenant> local|vectorize|default");
      }
      print(await call("PUT", `/admin/tenants/${t}/placement`, { placement: choice }));
      break;
    }
    case "rewrap-master":
      print(await call("POST", "/admin/master/rewrap"));
      if (values.wait)
        print(
          await waitFor(
            (s) => s.job?.completedAt,
            () => call("GET", "/admin/master"),
          ),
        );
      break;
    case "map-domain": {
      const [, domain, target] = positionals;
      if (!domain || !/^[a-z0-9][a-z0-9-]{1,62}$/.test(target ?? "")) {
        throw new Error("usage: npm run tenant -- map-domain <email domain> <tenant>");
      }
      print(await call("PUT", `/admin/oauth/email-domains/${encodeURIComponent(domain)}`, { tenant: target }));
      break;
    }
    case "unmap-domain": {
      if (!tenant) throw new Error("usage: npm run tenant -- unmap-domain <email domain>");
      print(await call("DELETE", `/admin/oauth/email-domains/${encodeURIComponent(tenant)}`));
      break;
    }
    case "domains":
      print(await call("GET", "/admin/oauth/email-domains"));
      break;
    case "egress": {
      const t = requireTenant();
      const current = (await call("GET", `/admin/tenants/${t}`)).egress;
      if (values.allow.length === 0 && !values.clear) {
        print(current);
        break;
      }
      if (values.allow.length > 0 && values.clear) throw new Error("egress: --allow and --clear exclude each other");
      const origins = values.clear ? [] : [...new Set(values.allow.map(originOf))];
      print((await call("PUT", `/admin/tenants/${t}/egress`, { ...current, origins })).egress);
      break;
    }
    default:
      console.error(
        "usage: npm run tenant -- status|rotate|offboard|placement|list|rewrap-master|egress|map-domain|unmap-domain|domains [args] " +
          "[--url URL] [--yes] [--wait] [--allow URL]... [--clear]",
      );
      process.exit(2);
  }
} catch (error) {
  console.error(`tenant: ${error.message}`);
  process.exit(1);
}
