// The sandbox runtime evaluated once per engine: it captures built-ins, hardens error conversion,
// installs the globals bundles expect and hands the engine a private API object. Every API function
// takes and returns JSON text and never throws anything but engine-made errors (interrupt, OOM).
// Replies are written by reply.js from state only the runtime holds: bundle code runs in the same
// heap and may have rewritten every built-in prototype by the time a reply is written.
import {
  ArrayPush,
  ArraySort,
  JSONParse,
  MapCtor,
  MapDelete,
  MapGet,
  MapSet,
  MapSize,
  MathMax,
  NumberCtor,
  NumberIsFinite,
  ObjectDefineProperty,
  ObjectKeys,
  PromiseCtor,
  PromiseThen,
  RangeErrorCtor,
  ReflectApply,
  StringCtor,
  StringIndexOf,
  StringSlice,
  TypeErrorCtor,
  uncurry,
  ArrayJoin,
  hasOwn,
  isUint8Array,
  list,
  mapEntries,
  performanceNow,
  toBase64,
  typedArrayLength,
} from "./intrinsics.js";
import { hardenErrors, hardenJobs } from "./harden.js";
import {
  MAX_DEPTH,
  describeError,
  fault,
  faultOf,
  inspect,
  isOutOfMemory,
  isStackOverflow,
  toJSONText,
} from "./serialize.js";
import {
  DETAIL_DEPTH,
  errorText,
  failureText,
  fetchRequestText,
  manifestText,
  numberText,
  quote,
  sliceWhole,
  stringListText,
  utf8Length,
} from "./reply.js";
import { randomFloat, seedRandom } from "./random.js";
import {
  Headers,
  Request,
  Response,
  TextDecoder,
  TextEncoder,
  URL,
  URLSearchParams,
  DOMException,
  Crypto,
  base64ToBytes,
  crypto,
  loadSubtle,
  headerPairs,
  parsedHref,
  requestState,
  structuredClone,
  takeRequestBody,
  responseFromHost,
  abortResponseBody,
} from "./web.js";
import { defineLazyGlobal, hooks, loaded as lazyLoaded } from "./web/lazy.js";
import { blobModule, eventsModule, installLazyGlobals, streamsModule } from "./web/modules.js";
import { installIntl, warmIntl } from "./intl/index.js";
import { performanceObject } from "./web/performance.js";
import {
  agentTools,
  buildModules,
  discoverAgents,
  introspectAgents,
  resolveTool,
  validateInput,
} from "./lightfast.js";
import { refusedReason } from "./node/index.js";

hardenErrors();
const FunctionToString = uncurry(Function.prototype.toString);

const MAX_TIMERS = 10000;

// The limits the engine passes, as numbers the runtime checked (a missing or odd field takes its
// default rather than a value some prototype getter supplies).
const DEFAULT_LIMITS = {
  __proto__: null,
  log_bytes: 262144,
  output_bytes: 1048576,
  max_fetches: 50,
  fetch_request_bytes: 1048576,
  fetch_response_bytes: 5242880,
};

function checkedLimits(given) {
  const out = { __proto__: null };
  const keys = ObjectKeys(DEFAULT_LIMITS);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const v = given !== null && typeof given === "object" && hasOwn(given, k) ? given[k] : undefined;
    out[k] = typeof v === "number" && NumberIsFinite(v) && v >= 0 ? v : DEFAULT_LIMITS[k];
  }
  return out;
}

// Everything one load or call accumulates; reset by begin() (in a forked child it starts empty).
// Logs and queued fetches are kept as JSON text, written when they happen.
const call = {
  __proto__: null,
  limits: checkedLimits(null),
  logs: list(),
  logBytes: 0,
  logsTruncated: false,
  timers: new MapCtor(),
  nextTimerId: 1,
  outbox: list(),
  pendingFetches: new MapCtor(),
  nextFetchId: 1,
  fetchCount: 0,
  fetchAllowed: false,
  outcome: null,
  outputText: "null",
  started: 0,
};

// ---------------------------------------------------------------- console

const LOG_LEVELS = { __proto__: null, log: true, info: true, debug: true, warn: true, error: true };

function logEntryText(level, message) {
  return '{"level":"' + level + '","message":' + quote(message) + "}";
}

// A log line is charged the UTF-8 size of its JSON entry, so the logs' JSON text stays within
// log_bytes (plus the one truncation notice) however short or escaped the lines are.
function addLog(level, args) {
  if (call.logsTruncated || LOG_LEVELS[level] !== true) return;
  const budget = call.limits.log_bytes - call.logBytes;
  const pieces = list();
  let size = 0;
  for (let i = 0; i < args.length && size <= budget; i++) {
    const text = inspect(args[i], budget - size + 1);
    size += text.length + 1;
    ArrayPush(pieces, text);
  }
  let message = ArrayJoin(pieces, " ");
  let entry = logEntryText(level, message);
  let cost = utf8Length(entry) + 1;
  if (cost > budget) {
    call.logsTruncated = true;
    const overhead = utf8Length(logEntryText(level, "")) + 1;
    let keep = message.length;
    while (keep > 0 && cost > budget) {
      // Each round keeps a share of the message in proportion to the room left: a few rounds.
      const next = (keep * MathMax(budget - overhead, 0)) / (cost - overhead + 1);
      keep = next < keep ? next - (next % 1) : keep - 1;
      message = sliceWhole(message, keep);
      entry = logEntryText(level, message);
      cost = utf8Length(entry) + 1;
    }
    if (cost > budget) entry = null;
  }
  if (entry !== null) {
    call.logBytes += cost;
    ArrayPush(call.logs, entry);
  }
  if (call.logsTruncated) {
    ArrayPush(call.logs, logEntryText("warn", `[logs truncated: limit of ${call.limits.log_bytes} bytes reached]`));
  }
}

function logsText() {
  return "[" + ArrayJoin(call.logs, ",") + "]";
}

function reportUncaught(error) {
  const d = describeError(error);
  addLog("error", [`Uncaught ${d.name}: ${d.message}`]);
}

const counters = new MapCtor();
const timersByLabel = new MapCtor();
const consoleObject = {
  log: (...args) => addLog("log", args),
  info: (...args) => addLog("info", args),
  debug: (...args) => addLog("debug", args),
  warn: (...args) => addLog("warn", args),
  error: (...args) => addLog("error", args),
  trace: (...args) => addLog("debug", args),
  dir: (value) => addLog("log", [value]),
  table: (value) => addLog("log", [value]),
  assert: (condition, ...args) => {
    if (!condition) addLog("error", ["Assertion failed", ...args]);
  },
  count: (label = "default") => {
    const n = (MapGet(counters, label) || 0) + 1;
    MapSet(counters, label, n);
    addLog("log", [`${label}: ${n}`]);
  },
  countReset: (label = "default") => MapDelete(counters, label),
  time: (label = "default") => MapSet(timersByLabel, label, performanceNow()),
  timeEnd: (label = "default") => {
    const t = MapGet(timersByLabel, label);
    if (t !== undefined) addLog("log", [`${label}: ${(performanceNow() - t).toFixed(3)}ms`]);
    MapDelete(timersByLabel, label);
  },
  timeLog: (label = "default", ...args) => {
    const t = MapGet(timersByLabel, label);
    if (t !== undefined) addLog("log", [`${label}: ${(performanceNow() - t).toFixed(3)}ms`, ...args]);
  },
  group: () => {},
  groupEnd: () => {},
};

// ---------------------------------------------------------------- timers

function addTimer(callback, delay, args, repeat) {
  if (typeof callback !== "function") throw new TypeErrorCtor("timer callback must be a function");
  if (MapSize(call.timers) >= MAX_TIMERS) throw new RangeErrorCtor(`more than ${MAX_TIMERS} pending timers`);
  const n = NumberCtor(delay);
  const ms = n > 0 && NumberIsFinite(n) ? n : n > 0 ? 2147483647 : 0;
  const id = call.nextTimerId++;
  const timer = { __proto__: null, due: performanceNow() + ms, callback, args, repeat: repeat ? MathMax(ms, 1) : 0, seq: id };
  MapSet(call.timers, id, timer);
  return id;
}

const setTimeout = (callback, delay = 0, ...args) => addTimer(callback, delay, args, false);
const setInterval = (callback, delay = 0, ...args) => addTimer(callback, delay, args, true);
const clearTimeout = (id) => {
  MapDelete(call.timers, NumberCtor(id));
};
// setImmediate is a timer due at once (it runs once the job queue is empty, after pending
// microtasks), so it counts against MAX_TIMERS and is dropped at the end of a call like the others.
const setImmediate = (callback, ...args) => addTimer(callback, 0, args, false);

function nextTimerDelay() {
  if (MapSize(call.timers) === 0) return null;
  let next = Infinity;
  const timers = mapEntries(call.timers);
  for (let i = 0; i < timers.length; i++) if (timers[i][1].due < next) next = timers[i][1].due;
  return next === Infinity ? null : MathMax(0, next - performanceNow());
}

function fireDueTimers() {
  if (MapSize(call.timers) === 0) return;
  const now = performanceNow();
  const due = list();
  const timers = mapEntries(call.timers);
  for (let i = 0; i < timers.length; i++) if (timers[i][1].due <= now) ArrayPush(due, timers[i]);
  ArraySort(due, (a, b) => a[1].due - b[1].due || a[1].seq - b[1].seq);
  for (let i = 0; i < due.length; i++) {
    const id = due[i][0];
    const timer = due[i][1];
    if (MapGet(call.timers, id) !== timer) continue; // cleared by an earlier callback
    if (timer.repeat) timer.due = performanceNow() + timer.repeat;
    else MapDelete(call.timers, id);
    try {
      ReflectApply(timer.callback, undefined, timer.args);
    } catch (error) {
      reportUncaught(error);
    }
  }
}

// ---------------------------------------------------------------- fetch

// The count against max_fetches is taken here, before the request exists, and the frame's request
// record is written from the request's private fields, checked with captured built-ins: what URL,
// Headers or Request methods a bundle replaced can change what it asks for, never how many
// requests leave or what shape they have. A stream or Blob body is read to its end first (at most
// fetch_request_bytes, counted while reading); the bytes that leave are checked again here.
function fetch(input, init = undefined) {
  return new PromiseCtor((resolve, reject) => {
    if (!call.fetchAllowed) {
      reject(fault("egress_denied", "fetch is only available while a tool runs, not at load time", TypeErrorCtor));
      return;
    }
    if (call.fetchCount >= call.limits.max_fetches) {
      reject(fault("egress_denied", `fetch limit reached: at most ${call.limits.max_fetches} requests per call`, TypeErrorCtor));
      return;
    }
    const request = new Request(input, init);
    const state = requestState(request);
    // The URL sent is the request's private one, parsed again with captured accessors.
    const url = parsedHref(StringCtor(state.url));
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      reject(fault("egress_denied", `only http and https URLs can be fetched, not ${url.protocol}`, TypeErrorCtor));
      return;
    }
    const href = url.href;
    const entry = { __proto__: null, resolve, reject, settled: false, id: 0, response: null, stopRead: null };
    const signal = state.signal;
    if (signal !== null) {
      const status = signalStatus(signal);
      if (status.aborted) {
        reject(status.reason);
        return;
      }
      subscribeAbort(signal, (reason) => abortFetch(entry, reason));
    }
    const limit = call.limits.fetch_request_bytes;
    const tooLarge = () => new TypeErrorCtor(`request body is larger than ${limit} bytes`);
    const body = takeRequestBody(request, limit, tooLarge, (stop) => {
      entry.stopRead = stop;
    });
    if (body.promise === null) {
      sendFetch(entry, state, href, body.bytes);
      return;
    }
    PromiseThen(
      body.promise,
      (bytes) => {
        entry.stopRead = null;
        if (!entry.settled) sendFetch(entry, state, href, bytes);
      },
      (error) => {
        entry.stopRead = null;
        settleFetch(entry, false, error);
      },
    );
  });
}

function settleFetch(entry, ok, value) {
  if (entry.settled) return;
  entry.settled = true;
  if (ok) entry.resolve(value);
  else entry.reject(value);
}

function sendFetch(entry, state, href, body) {
  let bodyB64 = null;
  if (body !== null && body !== undefined) {
    if (!isUint8Array(body)) {
      settleFetch(entry, false, new TypeErrorCtor("the request body could not be read"));
      return;
    }
    if (typedArrayLength(body) > call.limits.fetch_request_bytes) {
      settleFetch(entry, false, new TypeErrorCtor(`request body is larger than ${call.limits.fetch_request_bytes} bytes`));
      return;
    }
    bodyB64 = toBase64(body);
  }
  const requestText = fetchRequestText(href, state.method, headerPairs(state.headers), bodyB64);
  if (requestText[0] === "!") {
    settleFetch(entry, false, fault("egress_denied", StringSlice(requestText, 1), TypeErrorCtor));
    return;
  }
  if (!call.fetchAllowed || call.fetchCount >= call.limits.max_fetches) {
    // Re-checked: bundle code (a replaced URL or Headers method, a body stream) ran meanwhile.
    settleFetch(entry, false, fault("egress_denied", `fetch limit reached: at most ${call.limits.max_fetches} requests per call`, TypeErrorCtor));
    return;
  }
  call.fetchCount++;
  const id = call.nextFetchId++;
  entry.id = id;
  MapSet(call.pendingFetches, id, entry);
  ArrayPush(call.outbox, '{"id":' + StringCtor(id) + ',"request":' + requestText + "}");
}

// {aborted, reason} of a signal: ours from its private state, another implementation's from its
// properties (that bundle code provides either way).
function signalStatus(signal) {
  const events = lazyLoaded.events;
  const own = events !== null ? events.abortState(signal) : null;
  if (own !== null) return { __proto__: null, aborted: own.aborted, reason: own.reason };
  return { __proto__: null, aborted: signal.aborted === true, reason: signal.reason };
}

function subscribeAbort(signal, algorithm) {
  const events = lazyLoaded.events;
  if (events !== null && events.abortState(signal) !== null) {
    events.onAbort(signal, algorithm);
    return;
  }
  try {
    signal.addEventListener("abort", () => algorithm(signal.reason), { once: true });
  } catch (error) {
    reportUncaught(error);
  }
}

// An aborted signal: a fetch still reading its body or waiting for the host rejects with the
// reason at once (the host's late result finds no pending entry and is dropped); a response
// already delivered has its unread body errored with the reason.
function abortFetch(entry, reason) {
  if (entry.stopRead !== null) {
    const stop = entry.stopRead;
    entry.stopRead = null;
    stop(reason);
  }
  if (entry.id !== 0 && MapGet(call.pendingFetches, entry.id) === entry) MapDelete(call.pendingFetches, entry.id);
  if (entry.response !== null) abortResponseBody(entry.response, reason);
  settleFetch(entry, false, reason);
}

// A field of the host's fetch result (JSON.parse output): own properties only.
const field = (record, key) => (record !== null && typeof record === "object" && hasOwn(record, key) ? record[key] : undefined);

function completeFetch(id, result) {
  const pending = MapGet(call.pendingFetches, id);
  if (!pending) return;
  MapDelete(call.pendingFetches, id);
  if (field(result, "ok") !== true) {
    const err = field(result, "error");
    const given = field(err, "message");
    const message = typeof given === "string" && given !== "" ? given : "fetch failed";
    if (field(err, "type") === "egress_denied") settleFetch(pending, false, fault("egress_denied", message, TypeErrorCtor));
    else settleFetch(pending, false, new TypeErrorCtor(`fetch failed: ${message}`));
    return;
  }
  let bytes;
  try {
    const b64 = field(result, "body_b64");
    bytes = base64ToBytes(typeof b64 === "string" ? b64 : "");
  } catch {
    settleFetch(pending, false, new TypeErrorCtor("fetch failed: the host sent an undecodable body"));
    return;
  }
  if (typedArrayLength(bytes) > call.limits.fetch_response_bytes) {
    settleFetch(pending, false, new TypeErrorCtor(`fetch failed: response is larger than ${call.limits.fetch_response_bytes} bytes`));
    return;
  }
  const status = field(result, "status");
  const statusText = field(result, "statusText");
  const headers = field(result, "headers");
  const url = field(result, "url");
  let response;
  try {
    response = responseFromHost(
      typeof status === "number" ? status : 0,
      typeof statusText === "string" ? statusText : "",
      headers !== undefined && headers !== null ? headers : [],
      typeof url === "string" ? url : "",
      bytes,
      field(result, "redirected") === true,
    );
  } catch (error) {
    settleFetch(pending, false, error);
    return;
  }
  pending.response = response;
  settleFetch(pending, true, response);
}

// ---------------------------------------------------------------- globals

const processObject = {
  env: {},
  argv: [],
  platform: "lightfast-sandbox",
  versions: {},
  nextTick: (fn, ...args) => queueMicrotask(() => fn(...args)),
  emitWarning: (warning) => addLog("warn", [warning]),
};

const globals = {
  console: consoleObject,
  setTimeout,
  clearTimeout,
  setInterval,
  clearInterval: clearTimeout,
  setImmediate,
  clearImmediate: clearTimeout,
  fetch,
  Headers,
  Request,
  Response,
  TextEncoder,
  TextDecoder,
  URL,
  URLSearchParams,
  crypto,
  Crypto,
  structuredClone,
  DOMException,
  performance: performanceObject,
  process: processObject,
  self: globalThis,
};
for (const name of ObjectKeys(globals)) {
  ObjectDefineProperty(globalThis, name, { value: globals[name], writable: true, enumerable: false, configurable: true });
}
// Node's Buffer as a global, as Cloudflare's nodejs_compat offers it: npm code built for Node uses
// it without importing it (nanoid's Node entry does). Built on first use (node/index.js).
defineLazyGlobal(globalThis, "Buffer", () => modules.buffer.Buffer);
installLazyGlobals();
hooks.setTimer = (callback, ms) => addTimer(callback, ms, list(), false);
hooks.clearTimer = clearTimeout;
hooks.reportError = reportUncaught;
// Evaluated on first use (web/lazy.js): the Web Crypto classes load @noble/hashes and @noble/ciphers.
defineLazyGlobal(globalThis, "SubtleCrypto", () => loadSubtle().SubtleCrypto);
defineLazyGlobal(globalThis, "CryptoKey", () => loadSubtle().CryptoKey);
installIntl(globalThis);
// core-js modules keep their shared store (well-known symbols, internal state) on the global as
// well as in their own closures: the global one is removed so bundle code cannot reach it.
delete globalThis["__core-js_shared__"];
Math.random = randomFloat;
hardenJobs(reportUncaught);

// ---------------------------------------------------------------- module table

const modules = buildModules();
function require(name) {
  const key = StringCtor(name);
  const mod = hasOwn(modules, key) ? modules[key] : undefined;
  if (mod === undefined) {
    const reason = refusedReason(key);
    const why = reason === null ? "" : `: ${reason}`;
    throw fault("invalid_bundle", `module "${StringSlice(key, 0, 200)}" is not available in the sandbox${why}`);
  }
  return mod;
}

// ---------------------------------------------------------------- engine API

let loaded = null; // { agents, metadata }
let toolsCache = null;

// The error of a failed load or call as JSON text. Its type comes from the runtime's own fault
// table or its checks of engine-made errors, never from a property of the thrown value; `prefix`
// goes before the message when the type is `fallbackType`.
function errorFrom(error, fallbackType, prefix = "") {
  const f = faultOf(error);
  const d = describeError(error);
  if (f) return errorText(f.code, (f.code === fallbackType ? prefix : "") + d.message, f.detailText);
  if (isStackOverflow(error)) return errorText("stack_overflow", "maximum call stack size exceeded");
  if (isOutOfMemory(error)) return errorText("memory_limit", "the JavaScript heap limit was reached");
  return errorText(fallbackType, prefix + d.message, '{"name":' + quote(d.name) + ',"stack":' + quote(d.stack) + "}");
}

// Returns JSON text; the fallback never touches the thrown value, so nothing a bundle throws here
// can escape to the engine. Arguments are passed one by one (a spread would use an iterator).
// Replies built by concatenation can be rope strings, which the Python binding cannot convert:
// slicing the whole of one flattens it (and returns a flat string as it is).
function guarded(fn) {
  return (a, b) => {
    try {
      return StringSlice(fn(a, b), 0);
    } catch (error) {
      try {
        return failureText(errorFrom(error, "sandbox_crash"));
      } catch {
        return '{"ok":false,"error":{"type":"sandbox_crash","message":"runtime failure","detail":{}}}';
      }
    }
  };
}

function resetCall(limits) {
  call.limits = checkedLimits(limits);
  call.logs = list();
  call.logBytes = 0;
  call.logsTruncated = false;
  call.timers = new MapCtor();
  call.outbox = list();
  call.pendingFetches = new MapCtor();
  call.fetchCount = 0;
  call.outcome = null;
}

const OK = '{"ok":true}';

function load(bundleFunction, argsJSON) {
  const args = JSONParse(argsJSON);
  resetCall(args.limits);
  seedRandom(args.seed);
  processObject.env = { ...args.env };
  call.fetchAllowed = false;
  const module = { exports: {} };
  try {
    ReflectApply(bundleFunction, undefined, [require, module, module.exports]);
  } catch (error) {
    return failureText(errorFrom(error, "invalid_bundle", "the bundle threw while loading: "));
  }
  try {
    loaded = discoverAgents(module.exports);
  } catch (error) {
    return failureText(errorFrom(error, "invalid_bundle"));
  }
  if (!(hasOwn(args, "warm") && args.warm === false)) warmLazyGlobals(bundleFunction);
  return OK;
}

// Lazy globals the bundle's code names are evaluated now, in the zygote, rather than in every call
// (each call starts again from the zygote's state). A mention is enough: a false positive costs the
// zygote some memory, never a wrong result. Failures are left for the call that uses the global.
// (localeCompare is not a reason to load Intl: its collator is compiled into the runtime.)
const WARM_UPS = [
  [["Intl", "toLocaleString", "toLocaleDateString", "toLocaleTimeString"], warmIntl],
  [["subtle"], loadSubtle],
  [
    ["ReadableStream", "WritableStream", "TransformStream", "TextDecoderStream", "TextEncoderStream",
      "pipeThrough", "pipeTo", "getReader", "QueuingStrategy"],
    streamsModule,
  ],
  [["AbortController", "AbortSignal", "EventTarget", "CustomEvent"], eventsModule],
  [["Blob", "FormData", "new File"], blobModule],
];
function warmLazyGlobals(bundleFunction) {
  let source;
  try {
    source = FunctionToString(bundleFunction);
  } catch {
    return;
  }
  for (let i = 0; i < WARM_UPS.length; i++) {
    const [words, warm] = WARM_UPS[i];
    for (let j = 0; j < words.length; j++) {
      if (StringIndexOf(source, words[j]) >= 0) {
        try {
          warm();
        } catch {
          // the call that uses it reports the error
        }
        break;
      }
    }
  }
}

// After load: timers and fetches started at top level are dropped (logs are kept in the result).
function afterLoad() {
  const logs = logsText();
  resetCall(call.limits);
  return '{"ok":true,"logs":' + logs + "}";
}

function introspect() {
  if (!loaded) return failureText(errorText("invalid_bundle", "no bundle loaded"));
  const manifest = introspectAgents(loaded);
  // No toJSON is looked up (the bundle's Object.prototype.toJSON would rewrite the manifest), and
  // manifestText gives every field its type whatever the description code was made to return.
  const text = toJSONText(manifest, 16 * 1024 * 1024, MAX_DEPTH, true);
  return '{"ok":true,"manifest":' + manifestText(JSONParse(text)) + "}";
}

async function runCall(args) {
  if (!loaded || !hasOwn(loaded.agents, args.agent)) {
    throw fault(
      "unknown_tool",
      `no agent named "${StringSlice(StringCtor(args.agent), 0, 200)}"`,
      Error,
      '{"agents":' + (loaded ? stringListText(ObjectKeys(loaded.agents)) : "[]") + "}",
    );
  }
  const agent = loaded.agents[args.agent];
  const base = { ...args.context, sessionId: args.context.sessionId, resourceId: args.context.resourceId };
  let context = base;
  if (typeof agent.createRuntimeContext === "function") {
    const extra = await agent.createRuntimeContext({ sessionId: base.sessionId, resourceId: base.resourceId });
    context = { ...base, ...(extra !== null && typeof extra === "object" ? extra : {}) };
  }
  const record = await agentTools(agent, context);
  toolsCache = record;
  if (record === null || typeof record !== "object" || !hasOwn(record, args.tool)) {
    throw fault(
      "unknown_tool",
      `agent "${StringSlice(StringCtor(args.agent), 0, 200)}" has no tool "${StringSlice(StringCtor(args.tool), 0, 200)}"`,
      Error,
      '{"tools":' + (record !== null && typeof record === "object" ? stringListText(ObjectKeys(record)) : "[]") + "}",
    );
  }
  const tool = resolveTool(record[args.tool], context);
  if (typeof tool.execute !== "function") {
    throw fault(
      "unknown_tool",
      `tool "${StringSlice(StringCtor(args.tool), 0, 200)}" has no execute: it is a client-side tool, run by the chat's client`,
      Error,
    );
  }
  const input = JSONParse(args.input);
  const checked = await validateInput(tool.inputSchema, input);
  if (!checked.ok) {
    let issues;
    try {
      issues = toJSONText(checked.issues, 65536, DETAIL_DEPTH, true);
    } catch {
      issues = "[]";
    }
    throw fault("invalid_input", "the input does not match the tool's input schema", TypeErrorCtor, '{"issues":' + issues + "}");
  }
  return await tool.execute(checked.value);
}

function settle(ok, valueOrError) {
  if (call.outcome === null) call.outcome = { __proto__: null, ok, value: valueOrError };
}

function begin(argsJSON) {
  const args = JSONParse(argsJSON);
  resetCall(args.limits);
  seedRandom(args.seed);
  call.fetchAllowed = true;
  call.started = performanceNow();
  try {
    // runCall is async: it returns a native promise, so no `constructor` or `then` is looked up.
    PromiseThen(
      runCall(args),
      (value) => settle(true, value),
      (error) => settle(false, error),
    );
  } catch (error) {
    settle(false, error);
  }
  return OK;
}

// What the engine loop needs after the job queue ran dry. The queued fetches were counted
// against max_fetches when fetch() accepted them; the count is checked again here.
function poll() {
  const fetches = call.outbox;
  if (fetches.length > 0) call.outbox = list();
  if (fetches.length > call.limits.max_fetches) fetches.length = call.limits.max_fetches;
  const next = nextTimerDelay();
  return (
    '{"ok":true,"done":' +
    (call.outcome !== null ? "true" : "false") +
    ',"fetches":[' +
    ArrayJoin(fetches, ",") +
    '],"pendingFetches":' +
    numberText(MapSize(call.pendingFetches)) +
    ',"nextTimerMs":' +
    (next === null ? "null" : numberText(next)) +
    "}"
  );
}

function fireTimers() {
  fireDueTimers();
  return OK;
}

function fetchDone(id, resultJSON) {
  completeFetch(NumberCtor(id), JSONParse(resultJSON));
  return OK;
}

function fetchTimedOut(id) {
  completeFetch(NumberCtor(id), { __proto__: null, ok: false, error: { __proto__: null, type: "timeout", message: "the request timed out" } });
  return OK;
}

// Output and logs as one JSON text (output embedded verbatim, so a large result is parsed once).
function finish() {
  const outcome = call.outcome;
  if (outcome === null) {
    return failureText(errorText("timeout", "the call did not finish"), logsText());
  }
  if (!outcome.ok) {
    return failureText(errorFrom(outcome.value, "tool_error"), logsText());
  }
  let output;
  try {
    output = toJSONText(outcome.value, call.limits.output_bytes);
  } catch (error) {
    return failureText(errorFrom(error, "tool_error", "the output could not be converted to JSON: "), logsText());
  }
  call.outputText = output;
  return '{"ok":true,"logs":' + logsText() + "}";
}

// The output JSON text on its own, so the engine can measure it in bytes before parsing it.
function takeOutput() {
  const text = call.outputText;
  call.outputText = "null";
  return text;
}

function drainLogs() {
  return '{"ok":true,"logs":' + logsText() + "}";
}

void toolsCache;

const api = {
  load: guarded(load),
  afterLoad: guarded(afterLoad),
  introspect: guarded(introspect),
  begin: guarded(begin),
  poll: guarded(poll),
  fireTimers: guarded(fireTimers),
  fetchDone: guarded(fetchDone),
  fetchTimedOut: guarded(fetchTimedOut),
  finish: guarded(finish),
  takeOutput: guarded(takeOutput),
  drainLogs: guarded(drainLogs),
};

// Picked up (and deleted) by the engine right after this script runs.
globalThis.__lightfastRuntime = api;
