// The fetch types: Headers, Request, Response and their bodies.
//
// Written here rather than taken from a library: what runtime.js sends to the host is read from
// these classes' private fields (requestState, takeRequestBody), which no polyfill offers, and the
// fetch polyfills that exist are built on XMLHttpRequest or Node's http. Bodies are bytes until a
// bundle asks for a stream (`body`), so the common fetch + json() path never loads web/streams.js.
import {
  JSONParse,
  MapCtor,
  ArraySort,
  StringIndexOf,
  StringSlice,
  Uint8ArrayCtor,
  mapEntries,
  JSONStringify,
  PromiseResolve,
  PromiseThen,
  TypeErrorCtor,
  TypedArraySlice,
  WeakMapCtor,
  WeakMapGet,
  WeakMapSet,
  typedArrayLength,
} from "../intrinsics.js";
import { utf8Encode, utf8Decode, toBytes } from "./encoding.js";
import { URL, URLSearchParams } from "./url.js";
import { blobModule, eventsModule, streamsModule } from "./modules.js";
import { loaded } from "./lazy.js";

// ---------------------------------------------------------------- fetch types

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

// Readers of private state, set by static blocks while this module is evaluated: fetch reads what
// a request holds through them, never through getters or iterators on prototypes a bundle can change.
let headersMapOf;
let requestStateOf;

// [name, value] pairs of a Headers as fetch sends them (each value joined as entries() joins it).
export function headerPairs(headers) {
  const pairs = mapEntries(headersMapOf(headers));
  ArraySort(pairs, (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (let i = 0; i < pairs.length; i++) {
    const value = pairs[i][1];
    if (typeof value !== "string") continue;
    let joined = "";
    let from = 0;
    for (;;) {
      const at = StringIndexOf(value, "\n", from);
      if (at < 0) break;
      joined += StringSlice(value, from, at) + ", ";
      from = at + 1;
    }
    pairs[i][1] = from === 0 ? value : joined + StringSlice(value, from);
  }
  return pairs;
}

// {url, method, headers, bytes} of a Request, read from its private fields.
export function requestState(request) {
  return requestStateOf(request);
}

export class Headers {
  static {
    headersMapOf = (h) => h.#map;
  }
  #map = new MapCtor();
  constructor(init = undefined) {
    if (init === undefined || init === null) return;
    if (init instanceof Headers) {
      for (const [k, v] of init) this.append(k, v);
    } else if (typeof init === "object" && typeof init[Symbol.iterator] === "function") {
      for (const pair of init) {
        const p = Array.from(pair);
        if (p.length !== 2) throw new TypeError("Headers: each header must be a [name, value] pair");
        this.append(p[0], p[1]);
      }
    } else if (typeof init === "object") {
      for (const k of Object.keys(init)) this.append(k, init[k]);
    } else throw new TypeError("Headers: invalid init");
  }
  #name(name) {
    const n = String(name);
    if (!HEADER_NAME.test(n)) throw new TypeError(`Invalid header name: ${n.slice(0, 100)}`);
    return n.toLowerCase();
  }
  #value(value) {
    const v = String(value).replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "");
    if (/[\0\r\n]/.test(v)) throw new TypeError("Invalid header value");
    return v;
  }
  append(name, value) {
    const n = this.#name(name);
    const v = this.#value(value);
    const prev = this.#map.get(n);
    this.#map.set(n, prev === undefined ? v : n === "set-cookie" ? prev + "\n" + v : prev + ", " + v);
  }
  set(name, value) {
    this.#map.set(this.#name(name), this.#value(value));
  }
  get(name) {
    const v = this.#map.get(this.#name(name));
    return v === undefined ? null : v.replace(/\n/g, ", ");
  }
  getSetCookie() {
    const v = this.#map.get("set-cookie");
    return v === undefined ? [] : v.split("\n");
  }
  has(name) {
    return this.#map.has(this.#name(name));
  }
  delete(name) {
    this.#map.delete(this.#name(name));
  }
  forEach(callback, thisArg = undefined) {
    for (const [k, v] of this) callback.call(thisArg, v, k, this);
  }
  // The standard's "sort and combine": each set-cookie value is its own entry, never merged.
  *entries() {
    const keys = Array.from(this.#map.keys()).sort();
    for (const k of keys) {
      const value = this.#map.get(k);
      if (value === undefined) continue;
      if (k === "set-cookie") for (const cookie of value.split("\n")) yield [k, cookie];
      else yield [k, value];
    }
  }
  *keys() {
    for (const [k] of this.entries()) yield k;
  }
  *values() {
    for (const [, v] of this.entries()) yield v;
  }
  [Symbol.iterator]() {
    return this.entries();
  }
  get [Symbol.toStringTag]() {
    return "Headers";
  }
}

// ---------------------------------------------------------------- bodies

const NULL_BODY_STATUS = [101, 103, 204, 205, 304];
const REDIRECT_STATUS = [301, 302, 303, 307, 308];
const unusable = () => new TypeErrorCtor("Body is unusable: Body has already been read");

function hasMethod(value, name) {
  try {
    return typeof value[name] === "function";
  } catch {
    return false;
  }
}

// A body as the standard's "extract a body": {bytes | stream | pending, contentType}. Blobs and
// FormData are read asynchronously (`pending`, a promise of bytes); streams stay streams.
function extractBody(body) {
  const out = { __proto__: null, bytes: null, stream: null, pending: null, contentType: null };
  if (typeof body === "string") {
    out.bytes = utf8Encode(body);
    out.contentType = "text/plain;charset=UTF-8";
    return out;
  }
  if (body instanceof URLSearchParams) {
    out.bytes = utf8Encode(body.toString());
    out.contentType = "application/x-www-form-urlencoded;charset=UTF-8";
    return out;
  }
  const view = toBytes(body);
  if (view) {
    out.bytes = new Uint8ArrayCtor(view);
    return out;
  }
  if (body !== null && typeof body === "object") {
    const blobs = loaded.blob;
    if (blobs !== null && blobs.isFormData(body)) {
      const blob = blobs.formDataBlob(body);
      out.pending = blobs.blobBytes(blob);
      out.contentType = blobs.blobTypeOf(blob);
      return out;
    }
    if (blobs !== null && blobs.isBlob(body)) {
      out.pending = blobs.blobBytes(body);
      const type = blobs.blobTypeOf(body);
      if (type !== "") out.contentType = type;
      return out;
    }
    const streams = loaded.streams;
    if (streams !== null && streams.isReadableStream(body)) {
      if (streams.streamLocked(body) || streams.streamDisturbed(body)) {
        throw new TypeErrorCtor("Response body object should not be disturbed or locked");
      }
      out.stream = body;
      return out;
    }
    const tag = body[Symbol.toStringTag];
    if ((tag === "Blob" || tag === "File") && hasMethod(body, "arrayBuffer")) {
      // Another implementation's Blob (a bundle's own polyfill): its bytes, checked as they arrive.
      out.pending = PromiseThen(PromiseResolve(body.arrayBuffer()), (buffer) => {
        const bytes = toBytes(buffer);
        if (!bytes) throw new TypeErrorCtor("a Blob body did not read as an ArrayBuffer");
        return new Uint8ArrayCtor(bytes);
      });
      const type = body.type;
      if (typeof type === "string" && type !== "") out.contentType = type;
      return out;
    }
    if (hasMethod(body, "getReader") || hasMethod(body, Symbol.asyncIterator)) {
      // Another implementation's stream, or an async iterable of chunks (undici accepts both).
      out.stream = streamsModule().streamFromIterable(body);
      return out;
    }
  }
  out.bytes = utf8Encode(String(body));
  out.contentType = "text/plain;charset=UTF-8";
  return out;
}

// Readers and writers of a body's private state, set by Body's static block.
let bodyOf;

class Body {
  static {
    bodyOf = (b) => b.#state();
  }
  #bytes = null; // Uint8Array: the body's own bytes
  #pending = null; // promise of a Uint8Array (a Blob or FormData body)
  #stream = null; // ReadableStream, once there is one
  #used = false; // consumed without a stream
  #aborted = false; // an aborted fetch errored this body before it was read
  #reason = undefined;
  _initBody(extracted) {
    if (extracted === null) return;
    this.#bytes = extracted.bytes;
    this.#pending = extracted.pending;
    this.#stream = extracted.stream;
  }
  #state() {
    const self = this;
    return {
      __proto__: null,
      get isNull() {
        return self.#bytes === null && self.#pending === null && self.#stream === null;
      },
      get used() {
        return self.#isUsed();
      },
      get locked() {
        return self.#stream !== null && loaded.streams.streamLocked(self.#stream);
      },
      extracted() {
        const e = { __proto__: null, bytes: self.#bytes, pending: self.#pending, stream: self.#stream, contentType: null };
        return e;
      },
      // Takes the body for a new owner (a Request made from this one, or fetch): it is used here.
      take() {
        const e = this.extracted();
        if (self.#stream === null) self.#used = true;
        return e;
      },
      tee() {
        if (self.#stream === null) return this.extracted();
        const pair = streamsModule().teeStream(self.#stream);
        self.#stream = pair[0];
        return { __proto__: null, bytes: null, pending: null, stream: pair[1], contentType: null };
      },
      abort(reason) {
        if (self.#isUsed() && self.#stream === null) return;
        if (self.#stream !== null) {
          streamsModule().errorBytesStream(self.#stream, reason);
          return;
        }
        self.#aborted = true;
        self.#reason = reason;
      },
    };
  }
  #isUsed() {
    if (this.#stream !== null) return loaded.streams.streamDisturbed(this.#stream);
    return this.#used && (this.#bytes !== null || this.#pending !== null);
  }
  get bodyUsed() {
    return this.#isUsed();
  }
  get body() {
    if (this.#stream !== null) return this.#stream;
    if (this.#bytes === null && this.#pending === null) return null;
    const streams = streamsModule();
    if (this.#aborted) {
      this.#stream = new streams.ReadableStream({ start: (c) => c.error(this.#reason) });
    } else if (this.#used) {
      // Read already without a stream: what is left is a stream that is locked and disturbed.
      this.#stream = streams.consumedStream();
    } else if (this.#pending !== null) {
      const pending = this.#pending;
      this.#stream = streams.streamFromIterable(
        (async function* () {
          const bytes = await pending;
          if (typedArrayLength(bytes) > 0) yield bytes;
        })(),
      );
    } else {
      this.#stream = streams.bytesStream(this.#bytes);
    }
    this.#bytes = null;
    this.#pending = null;
    return this.#stream;
  }
  // The whole body as a private Uint8Array (a promise), marking it used.
  #consume() {
    if (this.#aborted) {
      this.#used = true;
      return Promise.reject(this.#reason);
    }
    if (this.#isUsed()) return Promise.reject(unusable());
    if (this.#stream !== null) {
      const streams = loaded.streams;
      if (streams.streamLocked(this.#stream)) return Promise.reject(unusable());
      return streams.readAllBytes(this.#stream, -1, null, null);
    }
    this.#used = true;
    if (this.#pending !== null) return this.#pending;
    return Promise.resolve(this.#bytes || new Uint8ArrayCtor(0));
  }
  arrayBuffer() {
    return this.#consume().then((b) => TypedArraySlice(b).buffer);
  }
  bytes() {
    return this.#consume().then((b) => TypedArraySlice(b));
  }
  text() {
    return this.#consume().then((b) => utf8Decode(b));
  }
  json() {
    return this.text().then((t) => JSONParse(t));
  }
  blob() {
    const type = this.headers.get("content-type");
    return this.#consume().then((b) => new (blobModule().globals.Blob)([b], { type: type === null ? "" : type }));
  }
  formData() {
    const type = this.headers.get("content-type");
    return this.#consume().then((b) => blobModule().parseFormBody(b, type, URLSearchParams));
  }
}

function withDefaultContentType(headers, extracted) {
  if (extracted !== null && extracted.contentType !== null && !headers.has("content-type")) {
    headers.set("content-type", extracted.contentType);
  }
}

// ---------------------------------------------------------------- Request

// A signal from a Request's init: one of our AbortSignals, or another implementation's (anything
// with `aborted` and addEventListener, as some bundled polyfills make), or none.
function checkedSignal(signal) {
  if (signal === undefined || signal === null) return null;
  const events = loaded.events;
  if (events !== null && events.abortState(signal) !== null) return signal;
  if (typeof signal === "object" && "aborted" in signal && hasMethod(signal, "addEventListener")) return signal;
  throw new TypeErrorCtor("Failed to construct 'Request': member signal is not of type AbortSignal.");
}

const requestSignals = new WeakMapCtor(); // Request -> its `signal` (made on first access)

export class Request extends Body {
  static {
    requestStateOf = (r) => ({
      __proto__: null,
      url: r.#url,
      method: r.#method,
      headers: r.#headers,
      signal: r.#signal,
      body: bodyOf(r),
    });
  }
  #url;
  #method;
  #headers;
  #signal = null;
  constructor(input, init = {}) {
    super();
    const opts = init || {};
    let inherited = null;
    if (input instanceof Request) {
      inherited = input;
      this.#url = requestStateOf(input).url;
      this.#signal = requestStateOf(input).signal;
    } else {
      this.#url = new URL(String(input)).href;
    }
    const method = String(opts.method || (inherited ? inherited.method : "GET")).toUpperCase();
    if (!/^[A-Z]+$/.test(method) || method === "CONNECT" || method === "TRACE" || method === "TRACK") {
      throw new TypeError(`Invalid request method: ${method.slice(0, 20)}`);
    }
    this.#method = method;
    if (opts.signal !== undefined) this.#signal = checkedSignal(opts.signal);
    this.#headers = new Headers(opts.headers !== undefined ? opts.headers : inherited ? inherited.headers : undefined);
    let extracted = null;
    if (opts.body !== undefined && opts.body !== null) {
      if (method === "GET" || method === "HEAD") throw new TypeError("Request with GET/HEAD method cannot have body");
      extracted = extractBody(opts.body);
      withDefaultContentType(this.#headers, extracted);
    } else if (inherited !== null) {
      const body = bodyOf(inherited);
      if (!body.isNull) {
        if (body.used) throw new TypeError("Cannot construct a Request with a Request object that has already been used.");
        extracted = body.take();
      }
    }
    this._initBody(extracted);
  }
  get url() {
    return this.#url;
  }
  get method() {
    return this.#method;
  }
  get headers() {
    return this.#headers;
  }
  get signal() {
    let signal = WeakMapGet(requestSignals, this);
    if (signal === undefined) {
      const events = eventsModule();
      signal = events.followingSignal(this.#signal !== null && events.abortState(this.#signal) !== null ? this.#signal : null);
      WeakMapSet(requestSignals, this, signal);
    }
    return signal;
  }
  get duplex() {
    return "half";
  }
  get redirect() {
    return "follow";
  }
  get credentials() {
    return "same-origin";
  }
  get mode() {
    return "cors";
  }
  get cache() {
    return "default";
  }
  get keepalive() {
    return false;
  }
  clone() {
    if (this.bodyUsed) throw new TypeError("Request.clone: Body has already been consumed.");
    const copy = new Request(this.#url, { method: this.#method, headers: this.#headers });
    copy.#signal = this.#signal;
    const body = bodyOf(this);
    if (!body.isNull) copy._initBody(body.tee());
    return copy;
  }
  get [Symbol.toStringTag]() {
    return "Request";
  }
}

// The body fetch sends: {bytes} now, or a promise of bytes read from a stream or Blob (at most
// `limit` bytes while reading: past it the stream is cancelled and `tooLarge()` rejects). The body
// is used afterwards. `stop` receives the function that aborts the read with a reason.
export function takeRequestBody(request, limit, tooLarge, stop) {
  const body = requestStateOf(request).body;
  if (body.isNull) return { __proto__: null, bytes: null, promise: null };
  if (body.used) throw unusable();
  const e = body.take();
  if (e.stream !== null) {
    const streams = streamsModule();
    if (streams.streamLocked(e.stream)) throw unusable();
    return { __proto__: null, bytes: null, promise: streams.readAllBytes(e.stream, limit, tooLarge, stop) };
  }
  if (e.pending !== null) return { __proto__: null, bytes: null, promise: e.pending };
  return { __proto__: null, bytes: e.bytes, promise: null };
}

// ---------------------------------------------------------------- Response

const HOST = {}; // the token of responses made from the host's fetch results

// A Response for the host's fetch result, and the erroring of its body when the fetch is aborted.
export let responseFromHost;
export let abortResponseBody;

export class Response extends Body {
  static {
    responseFromHost = (status, statusText, headers, url, bytes, redirected) => {
      const r = new Response(null, HOST);
      r.#status = status;
      r.#statusText = statusText;
      r.#headers = new Headers(headers);
      r.#url = url;
      r.#type = "basic";
      r.#redirected = redirected;
      r._initBody({ __proto__: null, bytes, pending: null, stream: null });
      return r;
    };
    abortResponseBody = (r, reason) => bodyOf(r).abort(reason);
  }
  #status = 200;
  #statusText = "";
  #headers;
  #url = "";
  #type = "default";
  #redirected = false;
  constructor(body = null, init = {}) {
    super();
    if (init === HOST) return;
    const opts = init || {};
    const status = opts.status === undefined ? 200 : Number(opts.status);
    if (!(status >= 200 && status <= 599) || status % 1 !== 0) {
      throw new RangeError(`init["status"] must be in the range of 200 to 599, inclusive.`);
    }
    const statusText = opts.statusText === undefined ? "" : String(opts.statusText);
    if (/[^\t\x20-\x7e\x80-\xff]/.test(statusText)) throw new TypeError("Invalid statusText");
    this.#status = status;
    this.#statusText = statusText;
    this.#headers = new Headers(opts.headers);
    if (body !== null && body !== undefined) {
      if (NULL_BODY_STATUS.includes(status)) throw new TypeError(`Response constructor: Invalid response status code ${status}`);
      const extracted = extractBody(body);
      withDefaultContentType(this.#headers, extracted);
      this._initBody(extracted);
    }
  }
  static json(data, init = {}) {
    const text = JSONStringify(data);
    if (text === undefined) throw new TypeError("Value is not JSON serializable");
    const headers = new Headers(init && init.headers);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
    return new Response(text, { ...init, headers });
  }
  static error() {
    const r = new Response(null, HOST);
    r.#status = 0;
    r.#headers = new Headers();
    r.#type = "error";
    return r;
  }
  static redirect(url, status = 302) {
    const href = new URL(String(url)).href;
    const code = Number(status);
    if (!REDIRECT_STATUS.includes(code)) throw new RangeError(`Invalid status code ${code}`);
    const r = new Response(null, HOST);
    r.#status = code;
    r.#headers = new Headers({ location: href });
    return r;
  }
  get status() {
    return this.#status;
  }
  get statusText() {
    return this.#statusText;
  }
  get ok() {
    return this.#status >= 200 && this.#status <= 299;
  }
  get headers() {
    return this.#headers;
  }
  get url() {
    return this.#url;
  }
  get redirected() {
    return this.#redirected;
  }
  get type() {
    return this.#type;
  }
  clone() {
    const body = bodyOf(this);
    if (body.used || body.locked) throw new TypeError("Response.clone: Body has already been consumed.");
    const r = new Response(null, HOST);
    r.#status = this.#status;
    r.#statusText = this.#statusText;
    r.#headers = new Headers(this.#headers);
    r.#url = this.#url;
    r.#type = this.#type;
    r.#redirected = this.#redirected;
    if (!body.isNull) r._initBody(body.tee());
    return r;
  }
  get [Symbol.toStringTag]() {
    return "Response";
  }
}
