import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { exportJWK, generateKeyPair } from "jose";
import { defineConfig, type Plugin } from "vitest/config";

// Test keys are generated per run and exist only in memory: the Worker trusts the public halves (AUTH_JWKS), and
// tests sign tokens with the private halves (TEST_PRIVATE_JWKS). The attacker key is never trusted.
async function keyPair(alg: string, kid: string, options: Record<string, unknown> = {}) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true, ...options });
  const pub = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  const priv = { ...(await exportJWK(privateKey)), kid, alg };
  return { pub, priv };
}

const trusted = await Promise.all([
  keyPair("ES256", "test-es256"),
  keyPair("RS256", "test-rs256", { modulusLength: 2048 }),
  keyPair("EdDSA", "test-eddsa", { crv: "Ed25519" }),
]);
const attacker = await keyPair("ES256", "test-es256");
/**
 * Drops one vite warning: published packages (the v1 `@modelcontextprotocol/sdk` among them) ship source maps that
 * name sources they do not ship, and vite warns once per such file whenever its cache is rebuilt. Every other
 * message passes. (vitest replaces `customLogger`, so the resolved logger is wrapped instead.)
 */
const quietMissingSources: Plugin = {
  name: "quiet-missing-sourcemap-sources",
  configResolved(config) {
    const warnOnce = config.logger.warnOnce.bind(config.logger);
    config.logger.warnOnce = (message, options) => {
      if (/^Sourcemap for "[^"]+" points to missing source files$/.test(message)) return;
      warnOnce(message, options);
    };
  },
};

const masterKey = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");

export default defineConfig({
  plugins: [
    quietMissingSources,
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        bindings: {
          ENVIRONMENT: "test",
          MCP_RESOURCE: "https://kb.test/mcp",
          AUTH_ISSUER: "https://issuer.test/",
          AUTH_JWKS: JSON.stringify({ keys: trusted.map((k) => k.pub) }),
          ALLOWED_ORIGINS: "https://app.kb.test",
          ALLOWED_HOSTS: "kb.test",
          MAX_BODY_BYTES: "65536",
          MAX_SESSIONS_PER_SUBJECT: "4",
          // Two master key epochs: t1 is current; t0 is an older epoch still readable (rotation tests).
          MASTER_KEY_EPOCH: "t1",
          MASTER_KEY_T1: masterKey(),
          MASTER_KEY_T0: masterKey(),
          TEST_PRIVATE_JWKS: JSON.stringify(trusted.map((k) => k.priv)),
          TEST_ATTACKER_JWK: JSON.stringify(attacker.priv),
        },
      },
    }),
  ],
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    // The server's own structured logs (and refusals the tests provoke on purpose) are printed only for a test that
    // fails, so that a real failure stands out.
    silent: "passed-only",
  },
});
