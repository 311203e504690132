// The fetch types: Headers, Request, Response and their bodies.
import {
  ArrayBufferCtor,
  ArrayIsArray,
  JSONParse,
  MapCtor,
  SetCtor,
  ArraySort,
  StringIndexOf,
  StringSlice,
  Uint8ArrayCtor,
  fromBase64,
  mapEntries,
  isArrayBuffer,
  isDate,
  isTypedArray,
  toBase64,
} from "../intrinsics.js";
import { randomBytesInto } from "../random.js";
import { utf8Encode, utf8Decode, toBytes } from "./encoding.js";
import { URL, URLSearchParams } from "./url.js";

// ---------------------------------------------------------------- fetch types

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

// Readers of private state, set by static blocks while this module is evaluated: fetch reads what
// a request holds through them, never through getters or iterators on prototypes a bundle can change.
let headersMapOf;
let bodyBytesOf;
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
  *entries() {
    const keys = Array.from(this.#map.keys()).sort();
    for (const k of keys) yield [k, this.#map.get(k).replace(/\n/g, ", ")];
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

export function bodyToBytes(body) {
  if (body === undefined || body === null) return null;
  if (typeof body === "string") return utf8Encode(body);
  if (body instanceof URLSearchParams) return utf8Encode(body.toString());
  const bytes = toBytes(body);
  if (bytes) return new Uint8ArrayCtor(bytes);
  if (typeof body === "object" && typeof body.getReader === "function") {
    throw new TypeError("streaming request bodies are not supported in the sandbox");
  }
  return utf8Encode(String(body));
}

function defaultContentType(body) {
  if (typeof body === "string") return "text/plain;charset=UTF-8";
  if (body instanceof URLSearchParams) return "application/x-www-form-urlencoded;charset=UTF-8";
  return null;
}

class Body {
  static {
    bodyBytesOf = (b) => b.#bytes;
  }
  #bytes;
  #used = false;
  _initBody(bytes) {
    this.#bytes = bytes;
  }
  get bodyUsed() {
    return this.#used;
  }
  get body() {
    return null;
  }
  #consume() {
    if (this.#used) return Promise.reject(new TypeError("Body has already been consumed"));
    this.#used = true;
    return Promise.resolve(this.#bytes || new Uint8ArrayCtor(0));
  }
  _peekBytes() {
    return this.#bytes;
  }
  arrayBuffer() {
    return this.#consume().then((b) => b.slice().buffer);
  }
  bytes() {
    return this.#consume().then((b) => b.slice());
  }
  text() {
    return this.#consume().then((b) => utf8Decode(b));
  }
  json() {
    return this.text().then((t) => JSONParse(t));
  }
}

export class Request extends Body {
  static {
    requestStateOf = (r) => ({ __proto__: null, url: r.#url, method: r.#method, headers: r.#headers, bytes: bodyBytesOf(r) });
  }
  #url;
  #method;
  #headers;
  constructor(input, init = {}) {
    super();
    const opts = init || {};
    let inherited = null;
    if (input instanceof Request) {
      inherited = input;
      this.#url = input.url;
    } else {
      this.#url = new URL(String(input)).href;
    }
    const method = String(opts.method || (inherited ? inherited.method : "GET")).toUpperCase();
    if (!/^[A-Z]+$/.test(method) || method === "CONNECT" || method === "TRACE" || method === "TRACK") {
      throw new TypeError(`Invalid request method: ${method.slice(0, 20)}`);
    }
    this.#method = method;
    this.#headers = new Headers(opts.headers !== undefined ? opts.headers : inherited ? inherited.headers : undefined);
    let bytes = inherited ? inherited._peekBytes() : null;
    if (opts.body !== undefined && opts.body !== null) {
      if (method === "GET" || method === "HEAD") throw new TypeError("Request with GET/HEAD method cannot have body");
      bytes = bodyToBytes(opts.body);
      const ct = defaultContentType(opts.body);
      if (ct && !this.#headers.has("content-type")) this.#headers.set("content-type", ct);
    }
    this._initBody(bytes);
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
    return undefined;
  }
  clone() {
    return new Request(this);
  }
}

export class Response extends Body {
  #status;
  #statusText;
  #headers;
  #url;
  constructor(body = null, init = {}) {
    super();
    const opts = init || {};
    const status = opts.status === undefined ? 200 : Number(opts.status);
    if (!(status >= 200 && status <= 599) && !opts._internal) throw new RangeError(`Invalid status ${status}`);
    this.#status = status;
    this.#statusText = opts.statusText === undefined ? "" : String(opts.statusText);
    this.#headers = new Headers(opts.headers);
    this.#url = opts._url ? String(opts._url) : "";
    const bytes = opts._bytes ? opts._bytes : bodyToBytes(body);
    const ct = opts._bytes ? null : defaultContentType(body);
    if (ct && !this.#headers.has("content-type")) this.#headers.set("content-type", ct);
    this._initBody(bytes);
  }
  static json(data, init = {}) {
    const headers = new Headers(init && init.headers);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
    return new Response(JSON.stringify(data), { ...init, headers });
  }
  static error() {
    return new Response(null, { status: 0, _internal: true });
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
    return false;
  }
  get type() {
    return "basic";
  }
  clone() {
    if (this.bodyUsed) throw new TypeError("Response body has already been consumed");
    return new Response(null, {
      status: this.#status,
      statusText: this.#statusText,
      headers: this.#headers,
      _url: this.#url,
      _bytes: this._peekBytes() || new Uint8ArrayCtor(0),
      _internal: true,
    });
  }
}
