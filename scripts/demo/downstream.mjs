// The demo's loopback downstream: an HTTP server on 127.0.0.1 that records every request the Worker sends out
// (method, original URL, headers, body) and answers with a small text document. Requests reach it through the
// demo host's outbound hook (host.mjs); nothing else on the machine is contacted.
import { createServer } from "node:http";

const MAX_BODY = 1 << 20;

export async function startDownstream() {
  const requests = [];
  const server = createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    req.on("end", () => {
      const headers = { ...req.headers };
      const url = headers["x-demo-original-url"] ?? `http://127.0.0.1${req.url}`;
      delete headers["x-demo-original-url"];
      requests.push({ method: req.method, url, headers, body: Buffer.concat(chunks).toString("utf8"), at: Date.now() });
      res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
      res.end("Quarterly harbour report.\n\nTide tables were updated in March.\n");
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  return {
    port: server.address().port,
    requests,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
