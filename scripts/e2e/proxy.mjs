// A loopback proxy in front of wrangler dev that adds `Authorization: Bearer <token>` to every request. The MCP
// conformance runner cannot send an Authorization header and the server has no unauthenticated MCP route.
//
// Host and Origin are passed through unchanged: the dns-rebinding scenario sends `Host: evil.example.com`, and only
// if that reaches the server is the server's own Host check exercised (rewriting Host to the upstream address would
// leave only the Origin check to catch it). The proxy's origin must therefore be in ALLOWED_ORIGINS.
import { createServer, request as httpRequest } from "node:http";

// Connection-level headers (RFC 9110 section 7.6.1) describe one hop; Node sets its own for the next hop.
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

function forwardable(headers) {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name.toLowerCase())));
}

export async function startAuthProxy({ upstreamPort, token }) {
  const server = createServer((req, res) => {
    const upstream = httpRequest(
      {
        host: "127.0.0.1",
        port: upstreamPort,
        method: req.method,
        path: req.url,
        headers: { ...forwardable(req.headers), authorization: `Bearer ${token}` },
      },
      (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, forwardable(upstreamRes.headers));
        // Responses may be long-lived SSE streams: stream them, never buffer.
        upstreamRes.pipe(res);
      },
    );
    upstream.on("error", (error) => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end(`e2e proxy: upstream error: ${error.message}`);
    });
    // A client that goes away (the conformance runner cancels SSE readers) must not leave the upstream open.
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  return {
    port: server.address().port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
