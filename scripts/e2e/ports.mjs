// Free loopback ports: listen on port 0 and let the kernel choose. A port handed to another process (wrangler) is
// released first, so there is a small window in which something else could take it; the ports chosen are distinct.
import { createServer } from "node:net";

export async function freePort(taken = []) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const server = createServer();
    await new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    const { port } = server.address();
    await new Promise((resolve) => server.close(resolve));
    if (!taken.includes(port)) return port;
  }
  throw new Error("could not find a free loopback port");
}
