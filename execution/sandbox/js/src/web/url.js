// URL and URLSearchParams (WHATWG URL Standard) from core-js: IPv4/IPv6 hosts, IDNA (punycode)
// hosts, percent-encoding sets, relative resolution, URL.canParse/URL.parse, searchParams kept
// in sync; checked against Node on a table of tricky URLs (tests/execution/sandbox/test_web_globals.py).
// core-js captures the built-ins it uses when the runtime is evaluated, before any bundle code.
import URL from "core-js-pure/stable/url/index.js";
import URLSearchParams from "core-js-pure/stable/url-search-params/index.js";
import { uncurry } from "../intrinsics.js";

const hrefOf = uncurry(Object.getOwnPropertyDescriptor(URL.prototype, "href").get);
const protocolOf = uncurry(Object.getOwnPropertyDescriptor(URL.prototype, "protocol").get);

// The serialized URL and its scheme, read with the getters captured above: a bundle that
// replaces URL.prototype's accessors cannot change what the runtime reads (fetch).
export function parsedHref(input, base = undefined) {
  const url = base === undefined ? new URL(input) : new URL(input, base);
  return { __proto__: null, href: hrefOf(url), protocol: protocolOf(url) };
}

export { URL, URLSearchParams };
