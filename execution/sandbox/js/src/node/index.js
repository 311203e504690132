// The Node built-in modules a bundle may import (as `x` or `node:x`): the subset edge runtimes offer
// in their Node-compat modes, each backed by the sandbox's own facilities (its randomness, timers,
// web crypto, URL) and well-kept npm code (buffer, events, util, readable-stream, path-browserify,
// string_decoder, @noble/hashes). Every module is built on its first require: a bundle that never
// imports one pays nothing for it (esbuild turns each `require` below into a lazy module init).
// The modules are the bundle's own objects, like Node's: a bundle that changes them only changes
// what it sees itself; nothing the host reads goes through them.
import { ObjectDefineProperty, ObjectKeys, hasOwn } from "../intrinsics.js";

// Node modules that bundles may not import, and why (shown at upload and by require at run time).
// The upload check (execution/sandbox/transform.py NODE_REFUSED) gives the same reasons.
const NO_FILES = "bundles have no file system; use fetch for remote data, or put the data in the bundle";
const NO_SOCKETS = "bundles have no sockets; use fetch (http and https to the organization's allowed hosts)";
const NO_PROCESSES = "bundles cannot start processes or threads; a tool call runs on one thread";
const NO_CODE = "bundles cannot load or evaluate other code";
const NO_HOST = "bundles do not see the machine they run on";
export const REFUSED = {
  __proto__: null,
  fs: NO_FILES,
  "fs/promises": NO_FILES,
  child_process: NO_PROCESSES,
  cluster: NO_PROCESSES,
  worker_threads: NO_PROCESSES,
  net: NO_SOCKETS,
  tls: NO_SOCKETS,
  http: NO_SOCKETS,
  https: NO_SOCKETS,
  http2: NO_SOCKETS,
  dgram: NO_SOCKETS,
  dns: NO_SOCKETS,
  "dns/promises": NO_SOCKETS,
  vm: NO_CODE,
  module: NO_CODE,
  repl: NO_CODE,
  inspector: NO_CODE,
  os: NO_HOST,
  v8: NO_HOST,
  tty: NO_HOST,
  readline: NO_HOST,
  perf_hooks: "use the global performance object",
  async_hooks: "the sandbox does not track asynchronous context",
  zlib: "compression is not offered in the sandbox",
};

function builders() {
  return {
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
}

function pathModule() {
  const path = require("path-browserify");
  if (!hasOwn(path, "posix")) path.posix = path;
  return path;
}

export const NODE_MODULE_NAMES = ObjectKeys(builders());

// Adds every Node module to `table` under both of its names, as accessors that build the module
// once and then keep it as a plain value.
export function addNodeModules(table) {
  const all = builders();
  for (const name of ObjectKeys(all)) {
    const build = all[name];
    let built = false;
    let value;
    const get = () => {
      if (!built) {
        value = build();
        built = true;
      }
      return value;
    };
    ObjectDefineProperty(table, name, { get, enumerable: true, configurable: false });
    ObjectDefineProperty(table, "node:" + name, { get, enumerable: true, configurable: false });
  }
  return table;
}

// Why `name` (a Node module the sandbox refuses) is not available, or null.
export function refusedReason(name) {
  const bare = name.startsWith("node:") ? name.slice(5) : name;
  return hasOwn(REFUSED, bare) ? REFUSED[bare] : null;
}

// A global that is built on first use, then becomes a plain writable data property (a bundle can
// also assign it first). `typeof Buffer` builds it too: code that tests for Buffer then uses it.
export function defineLazyGlobal(name, build) {
  const settle = (value) => {
    ObjectDefineProperty(globalThis, name, { value, writable: true, enumerable: false, configurable: true });
    return value;
  };
  ObjectDefineProperty(globalThis, name, {
    get: () => settle(build()),
    set: (value) => {
      settle(value);
    },
    enumerable: false,
    configurable: true,
  });
}
