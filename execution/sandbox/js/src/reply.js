// The runtime's replies to the engine, written as JSON text from values the runtime owns.
// A bundle can replace anything on the built-in prototypes (toJSON, index setters, iterators,
// String.prototype methods), so nothing here hands a runtime object to JSON.stringify: the text is
// concatenated from fixed strings, numbers checked with captured built-ins, strings quoted by the
// captured JSON.stringify (a primitive string has no toJSON to look up), and JSON text the runtime's
// own serializer produced. What a bundle controls (output, log lines, messages) stays data inside
// that text; which fields exist, the counts and the error type are the runtime's alone.
import {
  ArrayIsArray,
  ArrayJoin,
  ArrayPush,
  JSONStringify,
  NumberIsFinite,
  ObjectKeys,
  RegExpExec,
  StringCharCodeAt,
  StringCtor,
  StringSlice,
  hasOwn,
  list,
} from "./intrinsics.js";
import { MAX_DEPTH, toJSONText } from "./serialize.js";

// The error types the runtime may report. Limits enforced outside JS (cpu_limit, cancelled) and
// the host's own (quota_exceeded, rate_limited) are not in it: whatever the runtime is asked to
// report, anything else goes out as sandbox_crash.
const RUNTIME_ERROR_TYPES = {
  __proto__: null,
  invalid_bundle: true,
  unknown_tool: true,
  invalid_input: true,
  tool_error: true,
  output_limit: true,
  egress_denied: true,
  stack_overflow: true,
  memory_limit: true,
  timeout: true,
  sandbox_crash: true,
};

// Nesting allowed inside an error's detail (issues of a schema, for instance).
export const DETAIL_DEPTH = 32;

export function quote(text) {
  return JSONStringify(typeof text === "string" ? text : "");
}

export function numberText(value) {
  return typeof value === "number" && NumberIsFinite(value) ? StringCtor(value) : "null";
}

// A JSON array of the strings in a real array (other items are skipped), at most `max` of them.
export function stringListText(items, max = 1000, maxChars = 200) {
  const out = list();
  const n = ArrayIsArray(items) ? items.length >>> 0 : 0;
  for (let i = 0; i < n && out.length < max; i++) {
    const item = items[i];
    if (typeof item === "string") ArrayPush(out, JSONStringify(StringSlice(item, 0, maxChars)));
  }
  return "[" + ArrayJoin(out, ",") + "]";
}

// {type, message, detail} as JSON text; `detailText` must be JSON text the runtime built.
export function errorText(type, message, detailText = "{}") {
  const known = typeof type === "string" && RUNTIME_ERROR_TYPES[type] === true;
  return (
    '{"type":' +
    quote(known ? type : "sandbox_crash") +
    ',"message":' +
    quote(known ? message : "the runtime was asked to report an error type it does not know") +
    ',"detail":' +
    (typeof detailText === "string" ? detailText : "{}") +
    "}"
  );
}

export function failureText(errorJSON, logsJSON = undefined) {
  return '{"ok":false,"error":' + errorJSON + (logsJSON === undefined ? "" : ',"logs":' + logsJSON) + "}";
}

// UTF-8 size of a string (lone surrogates count as the 3 bytes of U+FFFD).
const NON_ASCII = /[^\x00-\x7f]/;
export function utf8Length(text) {
  const n = text.length;
  if (RegExpExec(NON_ASCII, text) === null) return n;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const c = StringCharCodeAt(text, i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = StringCharCodeAt(text, i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

// The first `n` UTF-16 units of `text`, not splitting a surrogate pair.
export function sliceWhole(text, n) {
  if (n <= 0) return "";
  if (n >= text.length) return text;
  const last = StringCharCodeAt(text, n - 1);
  return StringSlice(text, 0, last >= 0xd800 && last <= 0xdbff ? n - 1 : n);
}

// ------------------------------------------------------------------ fetch requests

const HTTP_URL = /^https?:\/\/[\x21-\x7e]+$/;
const METHOD = /^[A-Z]{1,16}$/;
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$/;
const BAD_HEADER_VALUE = /[\0\r\n]/;
const MAX_URL_CHARS = 16384;
export const MAX_REQUEST_HEADERS = 256;
const MAX_HEADER_CHARS = 65536;

// The request record of a fetch frame, checked here because everything that produced its parts
// (URL parsing, Headers, Request) runs on prototypes a bundle can change. Returns the JSON text,
// or a string starting with "!" that says what is wrong.
export function fetchRequestText(url, method, headerPairs, bodyB64) {
  if (typeof url !== "string" || url.length > MAX_URL_CHARS || RegExpExec(HTTP_URL, url) === null) {
    return "!only http and https URLs can be fetched";
  }
  if (
    typeof method !== "string" ||
    RegExpExec(METHOD, method) === null ||
    method === "CONNECT" ||
    method === "TRACE" ||
    method === "TRACK"
  ) {
    return "!invalid request method";
  }
  const n = headerPairs.length;
  if (n > MAX_REQUEST_HEADERS) return `!more than ${MAX_REQUEST_HEADERS} request headers`;
  const headers = list();
  let chars = 0;
  for (let i = 0; i < n; i++) {
    const name = headerPairs[i][0];
    const value = headerPairs[i][1];
    if (typeof name !== "string" || RegExpExec(HEADER_NAME, name) === null) return "!invalid header name";
    if (typeof value !== "string" || RegExpExec(BAD_HEADER_VALUE, value) !== null) return "!invalid header value";
    chars += name.length + value.length;
    if (chars > MAX_HEADER_CHARS) return `!request headers are larger than ${MAX_HEADER_CHARS} characters`;
    ArrayPush(headers, "[" + JSONStringify(name) + "," + JSONStringify(value) + "]");
  }
  return (
    '{"url":' +
    JSONStringify(url) +
    ',"method":' +
    JSONStringify(method) +
    ',"headers":[' +
    ArrayJoin(headers, ",") +
    '],"body_b64":' +
    (typeof bodyB64 === "string" ? JSONStringify(bodyB64) : "null") +
    "}"
  );
}

// ------------------------------------------------------------------ the manifest

// Own data property of a JSON.parse result (never a prototype's).
function own(record, key) {
  return record !== null && typeof record === "object" && hasOwn(record, key) ? record[key] : undefined;
}

function isRecord(value) {
  return value !== null && typeof value === "object" && !ArrayIsArray(value);
}

function stringOr(value, fallback) {
  return typeof value === "string" ? value : fallback;
}

// JSON text of a record's entries, each mapped by `entry` (which returns JSON text or undefined).
function recordText(record, entry) {
  const out = list();
  if (isRecord(record)) {
    const keys = ObjectKeys(record);
    for (let i = 0; i < keys.length; i++) {
      const text = entry(record[keys[i]]);
      if (text !== undefined) ArrayPush(out, JSONStringify(keys[i]) + ":" + text);
    }
  }
  return "{" + ArrayJoin(out, ",") + "}";
}

const plainJSON = (value, fallback) => (isRecord(value) ? toJSONText(value, 16 * 1024 * 1024, MAX_DEPTH, true) : fallback);

// The manifest in the shape BUNDLES.md gives, from the JSON.parse of what introspection produced:
// every field has its type, whatever the bundle did to the code that described it.
export function manifestText(manifest) {
  const metadata = own(manifest, "metadata");
  const meta = list();
  const metaKeys = ["name", "version", "description"];
  for (let i = 0; i < 3; i++) {
    const v = own(metadata, metaKeys[i]);
    if (typeof v === "string") ArrayPush(meta, JSONStringify(metaKeys[i]) + ":" + JSONStringify(v));
  }
  const tool = (t) =>
    isRecord(t)
      ? '{"description":' +
        quote(stringOr(own(t, "description"), "")) +
        ',"inputSchema":' +
        plainJSON(own(t, "inputSchema"), '{"type":"object","properties":{}}') +
        ',"outputSchema":' +
        plainJSON(own(t, "outputSchema"), "null") +
        // Only when true, so a manifest without them reads as before (lightfast.js: describeTool).
        (own(t, "clientSide") === true ? ',"clientSide":true' : "") +
        (own(t, "needsApproval") === true ? ',"needsApproval":true' : "") +
        "}"
      : undefined;
  const agent = (a) => {
    if (!isRecord(a)) return undefined;
    const model = own(a, "model");
    return (
      '{"name":' +
      quote(stringOr(own(a, "name"), "")) +
      ',"system":' +
      quote(stringOr(own(a, "system"), "")) +
      ',"model":{"provider":' +
      quote(stringOr(own(model, "provider"), "unknown")) +
      ',"id":' +
      quote(stringOr(own(model, "id"), "")) +
      // The provider's base URL, when the bundle's inlined provider shows one (lightfast.js).
      (typeof own(model, "baseURL") === "string" ? ',"baseURL":' + quote(own(model, "baseURL")) : "") +
      '},"tools":' +
      recordText(own(a, "tools"), tool) +
      ',"dynamicTools":' +
      (own(a, "dynamicTools") === true ? "true" : "false") +
      ',"options":' +
      plainJSON(own(a, "options"), "{}") +
      "}"
    );
  };
  const warnings = own(manifest, "warnings");
  return (
    '{"metadata":{' +
    ArrayJoin(meta, ",") +
    '},"agents":' +
    recordText(own(manifest, "agents"), agent) +
    ',"warnings":' +
    stringListText(warnings, 10000, 4000) +
    "}"
  );
}
