// The sandbox runtime evaluated once per engine: it captures built-ins, hardens error conversion,
// installs the globals bundles expect and hands the engine a private API object. Every API function
// takes and returns JSON text and never throws anything but engine-made errors (interrupt, OOM).
import {
  ArrayPush,
  JSONParse,
  JSONStringify,
  MapCtor,
  MapDelete,
  MapGet,
  MapSet,
  ObjectDefineProperty,
  ObjectKeys,
  PromiseCtor,
  PromiseResolve,
  PromiseThen,
  StringSlice,
  TypeErrorCtor,
  ArrayJoin,
  hasOwn,
  performanceNow,
} from "./intrinsics.js";
import { hardenErrors, hardenJobs } from "./harden.js";
import { describeError, fault, faultOf, inspect, isOutOfMemory, isStackOverflow, toJSONText } from "./serialize.js";
import { randomFloat, seedRandom } from "./random.js";
import {
  Headers,
  Request,
  Response,
  TextDecoder,
  TextEncoder,
  URL,
  URLSearchParams,
  base64ToBytes,
  bytesToBase64,
  crypto,
  structuredClone,
} from "./web.js";
import {
  agentTools,
  buildModules,
  discoverAgents,
  introspectAgents,
  resolveTool,
  validateInput,
} from "./lightfast.js";

hardenErrors();

const MAX_TIMERS = 10000;

// Everything one load or call accumulates; reset by begin() (in a forked child it starts empty).
const call = {
  limits: { log_bytes: 262144, output_bytes: 1048576, max_fetches: 50, fetch_request_bytes: 1048576, fetch_response_bytes: 5242880 },
  logs: [],
  logBytes: 0,
  logsTruncated: false,
  timers: new MapCtor(),
  nextTimerId: 1,
  outbox: [],
  pendingFetches: new MapCtor(),
  nextFetchId: 1,
  fetchCount: 0,
  fetchAllowed: false,
  outcome: null,
  outputText: "null",
  started: 0,
};

// ---------------------------------------------------------------- console

function addLog(level, args) {
  if (call.logsTruncated) return;
  const budget = call.limits.log_bytes - call.logBytes;
  const pieces = [];
  let size = 0;
  for (let i = 0; i < args.length && size <= budget; i++) {
    const text = inspect(args[i], budget - size + 1);
    size += text.length + 1;
    ArrayPush(pieces, text);
  }
  let message = ArrayJoin(pieces, " ");
  if (message.length > budget) {
    message = StringSlice(message, 0, budget > 0 ? budget : 0);
    call.logsTruncated = true;
  }
  call.logBytes += message.length;
  ArrayPush(call.logs, { level, message });
  if (call.logsTruncated) {
    ArrayPush(call.logs, { level: "warn", message: `[logs truncated: limit of ${call.limits.log_bytes} bytes reached]` });
  }
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
  if (call.timers.size >= MAX_TIMERS) throw new RangeError(`more than ${MAX_TIMERS} pending timers`);
  const ms = Number(delay) > 0 ? Number(delay) : 0;
  const id = call.nextTimerId++;
  MapSet(call.timers, id, { due: performanceNow() + ms, callback, args, repeat: repeat ? Math.max(ms, 1) : 0, seq: id });
  return id;
}

const setTimeout = (callback, delay = 0, ...args) => addTimer(callback, delay, args, false);
const setInterval = (callback, delay = 0, ...args) => addTimer(callback, delay, args, true);
const clearTimeout = (id) => {
  MapDelete(call.timers, Number(id));
};

function nextTimerDelay() {
  let next = Infinity;
  for (const timer of call.timers.values()) if (timer.due < next) next = timer.due;
  return next === Infinity ? null : Math.max(0, next - performanceNow());
}

function fireDueTimers() {
  const now = performanceNow();
  const due = [];
  for (const [id, timer] of call.timers) if (timer.due <= now) ArrayPush(due, [id, timer]);
  due.sort((a, b) => a[1].due - b[1].due || a[1].seq - b[1].seq);
  for (const [id, timer] of due) {
    if (MapGet(call.timers, id) !== timer) continue; // cleared by an earlier callback
    if (timer.repeat) timer.due = performanceNow() + timer.repeat;
    else MapDelete(call.timers, id);
    try {
      timer.callback(...timer.args);
    } catch (error) {
      reportUncaught(error);
    }
  }
}

// ---------------------------------------------------------------- fetch

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
    const url = new URL(request.url);
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      reject(fault("egress_denied", `only http and https URLs can be fetched, not ${url.protocol}`, TypeErrorCtor));
      return;
    }
    const body = request._peekBytes();
    if (body && body.length > call.limits.fetch_request_bytes) {
      reject(new TypeErrorCtor(`request body is larger than ${call.limits.fetch_request_bytes} bytes`));
      return;
    }
    call.fetchCount++;
    const id = call.nextFetchId++;
    const headers = [];
    for (const [k, v] of request.headers) ArrayPush(headers, [k, v]);
    MapSet(call.pendingFetches, id, { resolve, reject });
    ArrayPush(call.outbox, {
      id,
      request: { url: request.url, method: request.method, headers, body_b64: body ? bytesToBase64(body) : null },
    });
  });
}

function completeFetch(id, result) {
  const pending = MapGet(call.pendingFetches, id);
  if (!pending) return;
  MapDelete(call.pendingFetches, id);
  if (!result.ok) {
    const err = result.error || {};
    const message = String(err.message || "fetch failed");
    if (err.type === "egress_denied") pending.reject(fault("egress_denied", message, TypeErrorCtor));
    else pending.reject(new TypeErrorCtor(`fetch failed: ${message}`));
    return;
  }
  let bytes;
  try {
    bytes = base64ToBytes(result.body_b64 || "");
  } catch {
    pending.reject(new TypeErrorCtor("fetch failed: the host sent an undecodable body"));
    return;
  }
  if (bytes.length > call.limits.fetch_response_bytes) {
    pending.reject(new TypeErrorCtor(`fetch failed: response is larger than ${call.limits.fetch_response_bytes} bytes`));
    return;
  }
  pending.resolve(
    new Response(null, {
      status: result.status,
      statusText: result.statusText || "",
      headers: result.headers || [],
      _url: result.url,
      _bytes: bytes,
      _internal: true,
    }),
  );
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
  fetch,
  Headers,
  Request,
  Response,
  TextEncoder,
  TextDecoder,
  URL,
  URLSearchParams,
  crypto,
  structuredClone,
  process: processObject,
};
for (const name of ObjectKeys(globals)) {
  ObjectDefineProperty(globalThis, name, { value: globals[name], writable: true, enumerable: false, configurable: true });
}
Math.random = randomFloat;
hardenJobs(reportUncaught);

// ---------------------------------------------------------------- module table

const modules = buildModules();
function require(name) {
  const key = String(name);
  const mod = hasOwn(modules, key) ? modules[key] : undefined;
  if (mod === undefined) throw fault("invalid_bundle", `module "${StringSlice(key, 0, 200)}" is not available in the sandbox`);
  return mod;
}

// ---------------------------------------------------------------- engine API

let loaded = null; // { agents, metadata }
let toolsCache = null;

function errorFrom(error, fallbackType) {
  const f = faultOf(error);
  const d = describeError(error);
  if (f) return { type: f.code, message: d.message, detail: f.detail || {} };
  if (isStackOverflow(error)) return { type: "stack_overflow", message: "maximum call stack size exceeded", detail: {} };
  if (isOutOfMemory(error)) return { type: "memory_limit", message: "the JavaScript heap limit was reached", detail: {} };
  return { type: fallbackType, message: d.message, detail: { name: d.name, stack: d.stack } };
}

// Returns JSON text; the fallback never touches the thrown value, so nothing a bundle throws here
// can escape to the Python side.
function guarded(fn) {
  return (...args) => {
    try {
      return fn(...args);
    } catch (error) {
      try {
        return JSONStringify({ ok: false, error: errorFrom(error, "sandbox_crash") });
      } catch {
        return '{"ok":false,"error":{"type":"sandbox_crash","message":"runtime failure","detail":{}}}';
      }
    }
  };
}

function resetCall(limits) {
  call.limits = limits;
  call.logs = [];
  call.logBytes = 0;
  call.logsTruncated = false;
  call.timers = new MapCtor();
  call.outbox = [];
  call.pendingFetches = new MapCtor();
  call.fetchCount = 0;
  call.outcome = null;
}

function load(bundleFunction, argsJSON) {
  const args = JSONParse(argsJSON);
  resetCall(args.limits);
  seedRandom(args.seed);
  processObject.env = { ...args.env };
  call.fetchAllowed = false;
  const module = { exports: {} };
  try {
    bundleFunction(require, module, module.exports);
  } catch (error) {
    const e = errorFrom(error, "invalid_bundle");
    if (e.type === "invalid_bundle") e.message = `the bundle threw while loading: ${e.message}`;
    return JSONStringify({ ok: false, error: e });
  }
  try {
    loaded = discoverAgents(module.exports);
  } catch (error) {
    const e = errorFrom(error, "invalid_bundle");
    return JSONStringify({ ok: false, error: e });
  }
  return JSONStringify({ ok: true });
}

// After load: timers and fetches started at top level are dropped (logs are kept in the result).
function afterLoad() {
  const logs = call.logs;
  resetCall(call.limits);
  return JSONStringify({ ok: true, logs });
}

function introspect() {
  if (!loaded) return JSONStringify({ ok: false, error: { type: "invalid_bundle", message: "no bundle loaded", detail: {} } });
  const manifest = introspectAgents(loaded);
  return JSONStringify({ ok: true, manifest: JSONParse(toJSONText(manifest, 16 * 1024 * 1024)) });
}

async function runCall(args) {
  if (!loaded || !hasOwn(loaded.agents, args.agent)) {
    throw fault("unknown_tool", `no agent named "${StringSlice(String(args.agent), 0, 200)}"`, Error, {
      agents: loaded ? ObjectKeys(loaded.agents) : [],
    });
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
    throw fault("unknown_tool", `agent "${args.agent}" has no tool "${StringSlice(String(args.tool), 0, 200)}"`, Error, {
      tools: record !== null && typeof record === "object" ? ObjectKeys(record) : [],
    });
  }
  const tool = resolveTool(record[args.tool], context);
  const input = JSONParse(args.input);
  const checked = await validateInput(tool.inputSchema, input);
  if (!checked.ok) {
    let issues;
    try {
      issues = JSONParse(toJSONText(checked.issues, 65536));
    } catch {
      issues = [];
    }
    throw fault("invalid_input", "the input does not match the tool's input schema", TypeErrorCtor, { issues });
  }
  return await tool.execute(checked.value);
}

function begin(argsJSON) {
  const args = JSONParse(argsJSON);
  resetCall(args.limits);
  seedRandom(args.seed);
  call.fetchAllowed = true;
  call.started = performanceNow();
  let promise;
  try {
    promise = PromiseResolve(runCall(args));
  } catch (error) {
    call.outcome = { ok: false, error };
    return JSONStringify({ ok: true });
  }
  PromiseThen(
    promise,
    (value) => {
      call.outcome = { ok: true, value };
    },
    (error) => {
      call.outcome = { ok: false, error };
    },
  );
  return JSONStringify({ ok: true });
}

// What the engine loop needs after the job queue ran dry.
function poll() {
  const fetches = call.outbox;
  call.outbox = [];
  return JSONStringify({
    ok: true,
    done: call.outcome !== null,
    fetches,
    pendingFetches: call.pendingFetches.size,
    nextTimerMs: nextTimerDelay(),
  });
}

function fireTimers() {
  fireDueTimers();
  return '{"ok":true}';
}

function fetchDone(id, resultJSON) {
  completeFetch(Number(id), JSONParse(resultJSON));
  return '{"ok":true}';
}

function fetchTimedOut(id) {
  completeFetch(Number(id), { ok: false, error: { type: "timeout", message: "the request timed out" } });
  return '{"ok":true}';
}

// Output and logs as one JSON text (output embedded verbatim, so a large result is parsed once).
function finish() {
  const logsText = () => {
    try {
      return JSONStringify(call.logs);
    } catch {
      return "[]";
    }
  };
  const outcome = call.outcome;
  if (outcome === null) {
    return '{"ok":false,"error":{"type":"timeout","message":"the call did not finish","detail":{}},"logs":' + logsText() + "}";
  }
  if (!outcome.ok) {
    return JSONStringify({ ok: false, error: errorFrom(outcome.error, "tool_error"), logs: call.logs });
  }
  let output;
  try {
    output = toJSONText(outcome.value, call.limits.output_bytes);
  } catch (error) {
    const e = errorFrom(error, "tool_error");
    if (e.type === "tool_error") e.message = `the output could not be converted to JSON: ${e.message}`;
    return JSONStringify({ ok: false, error: e, logs: call.logs });
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
  return JSONStringify({ ok: true, logs: call.logs });
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
