declare global {
  namespace Cloudflare {
    interface Env {
      readonly TEST_PRIVATE_JWKS: string;
      readonly TEST_ATTACKER_JWK: string;
    }
  }
}

export {};
