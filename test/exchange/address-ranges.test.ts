import { describe, expect, it } from "vitest";
import { isForbiddenHost } from "../../src/egress/address-guard";
import wranglerToml from "../../wrangler.toml?raw";

/**
 * Issue 11 item 8: the address guard covers every entry of the IANA IPv4 and IPv6 Special-Purpose Address
 * Registries (the reported gaps were fec0::/10 and 192.88.99.0/24), and names are left to the platform's
 * `global_fetch_strictly_public` flag.
 */
const hostOf = (authority: string) => new URL(`https://${authority}/`).hostname;

const NEWLY_REFUSED = [
  // IPv4
  "192.88.99.1", // deprecated 6to4 relay anycast
  "192.88.99.255",
  "192.31.196.1", // AS112-v4
  "192.52.193.1", // AMT
  "192.175.48.1", // direct delegation AS112
  // IPv6
  "[fec0::1]", // site-local
  "[feff:ffff::1]",
  "[100::1]", // discard-only
  "[2001:2::1]", // benchmarking (2001::/23)
  "[2001:3::1]", // AMT
  "[2001:4:112::1]", // AS112-v6
  "[2001:10::1]", // ORCHID
  "[2001:20::1]", // ORCHIDv2
  "[2001:1ff:ffff::1]", // end of 2001::/23
  "[2620:4f:8000::1]", // direct delegation AS112
  "[3fff::1]", // documentation (RFC 9637)
  "[5f00::1]", // SRv6 SIDs
  "[4000::1]", // outside 2000::/3: unallocated
  "[e000::1]",
];

const STILL_PUBLIC = [
  "192.88.98.1",
  "192.88.100.1",
  "192.31.197.1",
  "192.175.49.1",
  "[2001:200::1]", // just past 2001::/23
  "[2620:4f:8001::1]",
  "[2606:4700::1111]",
  "[2a00:1450:4001::1]",
  "[3ffe::1]",
];

describe("address guard: IANA special-purpose ranges", () => {
  it.each(NEWLY_REFUSED)("refuses %s", (authority) => {
    expect(isForbiddenHost(hostOf(authority))).toBe(true);
  });

  it.each(STILL_PUBLIC)("still allows %s", (authority) => {
    expect(isForbiddenHost(hostOf(authority))).toBe(false);
  });
});

describe("names that resolve to private addresses", () => {
  it("the guard sees literals only (a name passes it) ...", () => {
    expect(isForbiddenHost(hostOf("127.0.0.1.nip.io"))).toBe(false);
  });

  it("... so the Worker runs with global_fetch_strictly_public (the platform refuses private resolutions)", () => {
    const flags = /^compatibility_flags = \[(.*)\]$/m.exec(wranglerToml)?.[1] ?? "";
    expect(flags).toContain('"global_fetch_strictly_public"');
    // One flag list for every environment: [env.production] must not override it without the flag.
    const overrides = wranglerToml.match(/^compatibility_flags = .*$/gm) ?? [];
    for (const line of overrides) expect(line).toContain('"global_fetch_strictly_public"');
  });
});
