// The Node built-in modules a bundle may import (as `x` or `node:x`): the subset edge runtimes offer
// in their Node-compat modes, each backed by the sandbox's own facilities (its randomness, timers,
// web crypto, URL) and well-kept npm code (buffer, events, util, readable-stream, path-browserify,
// string_decoder, @noble/hashes). Their code (modules.js) is a bundle of its own, kept here as
// source text (NODE_MODULES_SOURCE, put in by build.mjs) and compiled on the first require of any
// Node module; each module is then built on its own first require. A bundle that never imports
// one pays nothing for them: no bytecode in its zygote, no evaluation.
// The modules are the bundle's own objects, like Node's: a bundle that changes them only changes
// what it sees itself; nothing the host reads goes through them.
import { ObjectDefineProperty, hasOwn } from "../intrinsics.js";
import { randomBytesInto } from "../random.js";
import { TextDecoder, TextEncoder, URL, URLSearchParams, crypto } from "../web.js";

/* global NODE_MODULES_SOURCE */
// Captured before bundle code runs (the runtime compiles the Node modules with it).
const FunctionCtor = Function;

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

// The modules offered (modules.js builds them; build.mjs checks both lists agree).
export const NODE_MODULE_NAMES = [
  "buffer", "crypto", "events", "util", "util/types", "stream", "stream/promises", "path", "path/posix",
  "string_decoder", "url", "assert", "assert/strict", "timers", "timers/promises", "process",
];

// The compiled module bundle's builders, made on first use: the source text is compiled then, once.
let builders = null;
function builderOf(name) {
  if (builders === null) {
    const install = new FunctionCtor(NODE_MODULES_SOURCE)();
    builders = install({ crypto, URL, URLSearchParams, TextEncoder, TextDecoder, randomBytesInto });
  }
  return builders[name];
}

// Adds every Node module to `table` under both of its names, as accessors that build the module
// once and then keep it as a plain value.
export function addNodeModules(table) {
  for (const name of NODE_MODULE_NAMES) {
    let built = false;
    let value;
    const get = () => {
      if (!built) {
        value = builderOf(name)();
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

