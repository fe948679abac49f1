// A fetch with a cookie jar, as a browser's: cookies set by any answer are sent with every later request;
// redirects are returned, not followed, so the caller walks them as a user's browser would.
export function cookieFetch() {
  const cookies = new Map();
  return async (url, init = {}) => {
    const headers = new Headers(init.headers);
    if (cookies.size) headers.set("cookie", [...cookies].map(([k, v]) => `${k}=${v}`).join("; "));
    const response = await fetch(url, { ...init, headers, redirect: "manual" });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const eq = pair.indexOf("=");
      cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    return response;
  };
}
