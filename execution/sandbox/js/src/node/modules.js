// The Node modules themselves: a bundle of its own (build.mjs), kept in the runtime as source text
// and compiled on the first require of any of them (index.js). Compiled with the runtime, their
// ~200 KB of code would be ~2.5 MB of bytecode in every worker and every zygote, also for the
// bundles (most) that never import one. Each module is then built on its own first require
// (esbuild turns every `require` here into a lazy module init).
import { host } from "./host.js";

const builders = {
  __proto__: null,
  buffer: () => require("./buffer.js").default,
  crypto: () => require("./crypto.js").default,
  events: () => require("./events.js").default,
  util: () => require("./util.js").default,
  "util/types": () => require("./util.js").default.types,
  // The browser entry: the main one tries Node's own `stream` first.
  stream: () => require("readable-stream/lib/ours/browser.js"),
  "stream/promises": () => require("readable-stream/lib/ours/browser.js").promises,
  path: () => pathModule(),
  "path/posix": () => pathModule(),
  string_decoder: () => require("string_decoder"),
  url: () => require("./url.js").default,
  assert: () => require("./assert.js").default,
  "assert/strict": () => require("./assert.js").default,
  timers: () => require("./timers.js").timers,
  "timers/promises": () => require("./timers.js").promises,
  process: () => globalThis.process,
};

function pathModule() {
  const path = require("path-browserify");
  if (!Object.hasOwn(path, "posix")) path.posix = path;
  return path;
}

export function install(facilities) {
  Object.assign(host, facilities);
  return builders;
}
