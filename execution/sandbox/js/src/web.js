// The web platform globals bundles expect (TextEncoder, URL, Headers, Request, Response,
// structuredClone, crypto), written for QuickJS without any host access.
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
} from "./intrinsics.js";
import { randomBytesInto } from "./random.js";

// ---------------------------------------------------------------- text encoding

export function utf8Encode(input) {
  const str = String(input);
  const out = [];
  for (let i = 0; i < str.length; i++) {
    let c = str.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < str.length) {
      const d = str.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8ArrayCtor(out);
}

export function utf8Decode(bytes, fatal = false) {
  const parts = [];
  let chunk = [];
  const flush = () => {
    parts.push(String.fromCharCode.apply(null, chunk));
    chunk = [];
  };
  const bad = () => {
    if (fatal) throw new TypeError("The encoded data was not valid for encoding utf-8");
    chunk.push(0xfffd);
  };
  let i = 0;
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) i = 3;
  for (; i < bytes.length; ) {
    const b = bytes[i];
    let cp = -1;
    let need = 0;
    if (b < 0x80) { cp = b; need = 0; }
    else if (b >= 0xc2 && b < 0xe0) { cp = b & 31; need = 1; }
    else if (b >= 0xe0 && b < 0xf0) { cp = b & 15; need = 2; }
    else if (b >= 0xf0 && b < 0xf5) { cp = b & 7; need = 3; }
    else { bad(); i++; continue; }
    let j = 1;
    for (; j <= need; j++) {
      const n = bytes[i + j];
      if (n === undefined || (n & 0xc0) !== 0x80) break;
      cp = (cp << 6) | (n & 63);
    }
    if (j <= need || (need === 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need === 3 && (cp < 0x10000 || cp > 0x10ffff))) {
      bad();
      i += j > 1 ? j : 1;
      continue;
    }
    i += need + 1;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      chunk.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 1023));
    } else chunk.push(cp);
    if (chunk.length >= 8192) flush();
  }
  flush();
  return parts.join("");
}

export function toBytes(data) {
  if (data instanceof Uint8ArrayCtor) return data;
  if (isArrayBuffer(data)) return new Uint8ArrayCtor(data);
  if (isTypedArray(data) || data instanceof DataView) {
    return new Uint8ArrayCtor(data.buffer, data.byteOffset, data.byteLength);
  }
  return null;
}

export class TextEncoder {
  get encoding() {
    return "utf-8";
  }
  encode(input = "") {
    return utf8Encode(input);
  }
  encodeInto(input, dest) {
    const bytes = utf8Encode(input);
    const n = Math.min(bytes.length, dest.length);
    dest.set(bytes.subarray(0, n));
    return { read: String(input).length, written: n };
  }
}

export class TextDecoder {
  #fatal;
  constructor(label = "utf-8", options = {}) {
    const l = String(label).toLowerCase();
    if (l !== "utf-8" && l !== "utf8" && l !== "unicode-1-1-utf-8") {
      throw new RangeError(`The encoding label provided ('${label}') is not supported`);
    }
    this.#fatal = Boolean(options && options.fatal);
  }
  get encoding() {
    return "utf-8";
  }
  get fatal() {
    return this.#fatal;
  }
  decode(input) {
    if (input === undefined) return "";
    const bytes = toBytes(input);
    if (!bytes) throw new TypeError("TextDecoder.decode: input must be an ArrayBuffer or a view");
    return utf8Decode(bytes, this.#fatal);
  }
}

// ---------------------------------------------------------------- base64

export function bytesToBase64(bytes) {
  return toBase64(bytes);
}

export function base64ToBytes(text) {
  return fromBase64(text);
}

// ---------------------------------------------------------------- URL

const SPECIAL = { "http:": "80", "https:": "443", "ws:": "80", "wss:": "443", "ftp:": "21", "file:": "" };

function percentEncode(str, keep) {
  let out = "";
  const bytes = utf8Encode(str);
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    const ch = String.fromCharCode(b);
    if (b > 0x20 && b < 0x7f && (keep.indexOf(ch) >= 0 || /[A-Za-z0-9\-._~!$&'()*+,;=:@\/%?]/.test(ch)) && keep !== "") {
      out += ch;
    } else if (b > 0x20 && b < 0x7f && keep === "" && /[A-Za-z0-9\-._~]/.test(ch)) {
      out += ch;
    } else {
      out += "%" + (b < 16 ? "0" : "") + b.toString(16).toUpperCase();
    }
  }
  return out;
}

function encodePath(str) {
  return percentEncode(str, "/").replace(/[?#]/g, (c) => (c === "?" ? "%3F" : "%23"));
}

function encodeQuery(str) {
  return percentEncode(str, "?/").replace(/#/g, "%23");
}

function normalizePath(path) {
  const segments = path.split("/");
  const out = [];
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i];
    const last = i === segments.length - 1;
    if (seg === "." || seg.toLowerCase() === "%2e") {
      if (last) out.push("");
    } else if (seg === ".." || /^(\.|%2e){2}$/i.test(seg)) {
      out.pop();
      if (last) out.push("");
    } else out.push(seg);
  }
  return "/" + out.join("/");
}

function parseHost(host, special) {
  if (host.startsWith("[")) {
    if (!/^\[[0-9a-fA-F:.]+\]$/.test(host)) throw new TypeError("Invalid URL");
    return host.toLowerCase();
  }
  let h;
  try {
    h = decodeURIComponent(host);
  } catch {
    throw new TypeError("Invalid URL");
  }
  if (special) {
    h = h.toLowerCase();
    if (h === "" || /[\x00-\x20#%\/:<>?@\[\\\]^|]/.test(h)) throw new TypeError("Invalid URL");
    if (/[^\x00-\x7f]/.test(h)) throw new TypeError("Invalid URL: international domain names are not supported");
  } else if (/[\x00-\x20#\/<>?@\[\\\]^|]/.test(h)) throw new TypeError("Invalid URL");
  return h;
}

function parseURL(input, base) {
  let s = String(input).replace(/^[\x00-\x20]+|[\x00-\x20]+$/g, "").replace(/[\t\n\r]/g, "");
  const r = { protocol: "", username: "", password: "", hostname: "", port: "", pathname: "", search: "", hash: "", opaque: false };
  const hashAt = s.indexOf("#");
  if (hashAt >= 0) {
    r.hash = s.slice(hashAt + 1);
    s = s.slice(0, hashAt);
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+\-.]*):(.*)$/.exec(s);
  if (!m) {
    if (!base) throw new TypeError(`Invalid URL: ${String(input).slice(0, 200)}`);
    const b = base;
    r.protocol = b.protocol;
    if (b.opaque) {
      if (s !== "" || hashAt < 0) throw new TypeError("Invalid URL");
      Object.assign(r, b, { hash: r.hash });
      return r;
    }
    const special = r.protocol in SPECIAL;
    const bs = special ? s.replace(/\\/g, "/") : s;
    if (bs.startsWith("//")) return parseAfterScheme(r, bs.slice(2), special, true);
    Object.assign(r, { username: b.username, password: b.password, hostname: b.hostname, port: b.port });
    const q = bs.indexOf("?");
    const path = q >= 0 ? bs.slice(0, q) : bs;
    r.search = q >= 0 ? bs.slice(q + 1) : path === "" ? b.search.replace(/^\?/, "") : "";
    if (path === "") r.pathname = b.pathname;
    else if (path.startsWith("/")) r.pathname = normalizePath(encodePath(path));
    else r.pathname = normalizePath(b.pathname.replace(/[^/]*$/, "") + encodePath(path));
    if (r.search === "" && q < 0 && path !== "") r.search = "";
    r.search = r.search ? "?" + encodeQuery(r.search) : q >= 0 && bs.length > q + 1 ? "?" : "";
    r.hash = r.hash ? "#" + percentEncode(r.hash, "?/") : "";
    return r;
  }
  r.protocol = m[1].toLowerCase() + ":";
  let rest = m[2];
  const special = r.protocol in SPECIAL;
  if (special) rest = rest.replace(/\\/g, "/");
  if (rest.startsWith("//")) return parseAfterScheme(r, rest.slice(2), special, false);
  if (special) {
    if (base && base.protocol === r.protocol && !rest.startsWith("/")) return parseURL(rest + (r.hash ? "#" + r.hash : ""), base);
    return parseAfterScheme(r, rest.replace(/^\/*/, ""), special, false);
  }
  // Opaque path (mailto:, data:, urn:...).
  r.opaque = !rest.startsWith("/");
  const q = rest.indexOf("?");
  r.pathname = q >= 0 ? rest.slice(0, q) : rest;
  r.search = q >= 0 && rest.length > q + 1 ? "?" + encodeQuery(rest.slice(q + 1)) : "";
  r.hash = r.hash ? "#" + percentEncode(r.hash, "?/") : "";
  return r;
}

function parseAfterScheme(r, rest, special, relative) {
  let end = rest.search(/[\/?]/);
  if (end < 0) end = rest.length;
  let authority = rest.slice(0, end);
  let tail = rest.slice(end);
  const at = authority.lastIndexOf("@");
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    authority = authority.slice(at + 1);
    const colon = userinfo.indexOf(":");
    r.username = percentEncode(colon >= 0 ? userinfo.slice(0, colon) : userinfo, "");
    r.password = colon >= 0 ? percentEncode(userinfo.slice(colon + 1), "") : "";
  } else {
    r.username = "";
    r.password = "";
  }
  let host = authority;
  let port = "";
  const pm = /^(.*?)(?::(\d*))?$/.exec(authority.startsWith("[") ? authority.replace(/^(\[[^\]]*\])/, "$1\u0000").replace("\u0000", "") : authority);
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close < 0) throw new TypeError("Invalid URL");
    host = authority.slice(0, close + 1);
    const after = authority.slice(close + 1);
    if (after && !/^:\d*$/.test(after)) throw new TypeError("Invalid URL");
    port = after.slice(1);
  } else if (pm) {
    host = pm[1];
    port = pm[2] || "";
    if (/:/.test(host)) throw new TypeError("Invalid URL");
  }
  if (port !== "") {
    const n = Number(port);
    if (!(n >= 0 && n <= 65535)) throw new TypeError("Invalid URL: bad port");
    port = String(n);
    if (special && SPECIAL[r.protocol] === port) port = "";
  }
  if (r.protocol === "file:") {
    r.hostname = host ? parseHost(host, true) : "";
  } else {
    if (special && host === "") throw new TypeError("Invalid URL: missing host");
    r.hostname = host === "" ? "" : parseHost(host, special);
  }
  r.port = port;
  const q = tail.indexOf("?");
  const path = q >= 0 ? tail.slice(0, q) : tail;
  r.pathname = path === "" ? (special ? "/" : "") : normalizePath(encodePath(path));
  r.search = q >= 0 && tail.length > q + 1 ? "?" + encodeQuery(tail.slice(q + 1)) : "";
  r.hash = r.hash ? "#" + percentEncode(r.hash, "?/") : "";
  void relative;
  return r;
}

function formEncode(str) {
  return percentEncode(String(str), "").replace(/%20/g, "+").replace(/%2A/g, "*");
}

function formDecode(str) {
  const s = str.replace(/\+/g, " ");
  try {
    return decodeURIComponent(s);
  } catch {
    return s.replace(/%([0-9a-fA-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
  }
}

export class URLSearchParams {
  #list = [];
  #onChange = null;
  constructor(init = undefined) {
    if (init === undefined || init === null) return;
    if (typeof init === "object" && typeof init[Symbol.iterator] === "function") {
      for (const pair of init) {
        const p = Array.from(pair);
        if (p.length !== 2) throw new TypeError("URLSearchParams: each pair must have two items");
        this.#list.push([String(p[0]), String(p[1])]);
      }
    } else if (typeof init === "object") {
      for (const k of Object.keys(init)) this.#list.push([k, String(init[k])]);
    } else {
      this.#parse(String(init));
    }
  }
  #parse(s) {
    this.#list = [];
    for (const part of s.replace(/^\?/, "").split("&")) {
      if (part === "") continue;
      const eq = part.indexOf("=");
      this.#list.push(eq >= 0 ? [formDecode(part.slice(0, eq)), formDecode(part.slice(eq + 1))] : [formDecode(part), ""]);
    }
  }
  static _attach(params, query, onChange) {
    params.#parse(query);
    params.#onChange = onChange;
  }
  static _reset(params, query) {
    params.#parse(query);
  }
  #changed() {
    if (this.#onChange) this.#onChange(this.toString());
  }
  get size() {
    return this.#list.length;
  }
  append(name, value) {
    this.#list.push([String(name), String(value)]);
    this.#changed();
  }
  delete(name, value = undefined) {
    const n = String(name);
    this.#list = this.#list.filter(([k, v]) => !(k === n && (value === undefined || v === String(value))));
    this.#changed();
  }
  get(name) {
    const e = this.#list.find(([k]) => k === String(name));
    return e ? e[1] : null;
  }
  getAll(name) {
    return this.#list.filter(([k]) => k === String(name)).map(([, v]) => v);
  }
  has(name, value = undefined) {
    return this.#list.some(([k, v]) => k === String(name) && (value === undefined || v === String(value)));
  }
  set(name, value) {
    const n = String(name);
    const i = this.#list.findIndex(([k]) => k === n);
    if (i < 0) this.#list.push([n, String(value)]);
    else {
      this.#list[i] = [n, String(value)];
      this.#list = this.#list.filter(([k], j) => k !== n || j <= i);
    }
    this.#changed();
  }
  sort() {
    this.#list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    this.#changed();
  }
  forEach(callback, thisArg = undefined) {
    for (const [k, v] of this.#list) callback.call(thisArg, v, k, this);
  }
  *entries() {
    for (const [k, v] of this.#list) yield [k, v];
  }
  *keys() {
    for (const [k] of this.#list) yield k;
  }
  *values() {
    for (const [, v] of this.#list) yield v;
  }
  [Symbol.iterator]() {
    return this.entries();
  }
  toString() {
    return this.#list.map(([k, v]) => formEncode(k) + "=" + formEncode(v)).join("&");
  }
  get [Symbol.toStringTag]() {
    return "URLSearchParams";
  }
}

export class URL {
  #r;
  #params;
  constructor(url, base = undefined) {
    let b = null;
    if (base !== undefined) b = base instanceof URL ? base.#r : parseURL(String(base), null);
    this.#r = parseURL(url instanceof URL ? url.href : String(url), b);
    this.#params = new URLSearchParams();
    URLSearchParams._attach(this.#params, this.#r.search, (q) => {
      this.#r.search = q ? "?" + q : "";
    });
  }
  static canParse(url, base = undefined) {
    try {
      new URL(url, base);
      return true;
    } catch {
      return false;
    }
  }
  static parse(url, base = undefined) {
    try {
      return new URL(url, base);
    } catch {
      return null;
    }
  }
  get href() {
    const r = this.#r;
    if (r.opaque) return r.protocol + r.pathname + r.search + r.hash;
    const auth = r.username || r.password ? r.username + (r.password ? ":" + r.password : "") + "@" : "";
    const hasHost = r.protocol in SPECIAL || r.hostname !== "" || auth;
    return r.protocol + (hasHost ? "//" + auth + this.host : "") + r.pathname + r.search + r.hash;
  }
  set href(value) {
    const next = parseURL(String(value), null);
    this.#r = next;
    URLSearchParams._reset(this.#params, next.search);
  }
  get origin() {
    return this.#r.protocol in SPECIAL && this.#r.protocol !== "file:" ? this.#r.protocol + "//" + this.host : "null";
  }
  get protocol() {
    return this.#r.protocol;
  }
  set protocol(v) {
    const p = String(v).replace(/:.*$/, "").toLowerCase() + ":";
    if (/^[a-z][a-z0-9+\-.]*:$/.test(p) && (p in SPECIAL) === (this.#r.protocol in SPECIAL)) {
      this.#r.protocol = p;
      if (SPECIAL[p] === this.#r.port) this.#r.port = "";
    }
  }
  get username() {
    return this.#r.username;
  }
  set username(v) {
    this.#r.username = percentEncode(String(v), "");
  }
  get password() {
    return this.#r.password;
  }
  set password(v) {
    this.#r.password = percentEncode(String(v), "");
  }
  get host() {
    return this.#r.hostname + (this.#r.port ? ":" + this.#r.port : "");
  }
  set host(v) {
    const tmp = parseURL(this.#r.protocol + "//" + String(v), null);
    this.#r.hostname = tmp.hostname;
    this.#r.port = tmp.port;
  }
  get hostname() {
    return this.#r.hostname;
  }
  set hostname(v) {
    this.#r.hostname = parseHost(String(v), this.#r.protocol in SPECIAL);
  }
  get port() {
    return this.#r.port;
  }
  set port(v) {
    const s = String(v);
    if (s === "") this.#r.port = "";
    else if (/^\d+$/.test(s) && Number(s) <= 65535) this.#r.port = SPECIAL[this.#r.protocol] === String(Number(s)) ? "" : String(Number(s));
  }
  get pathname() {
    return this.#r.pathname;
  }
  set pathname(v) {
    if (this.#r.opaque) return;
    const p = String(v);
    this.#r.pathname = normalizePath(encodePath(p.startsWith("/") ? p : "/" + p));
  }
  get search() {
    return this.#r.search.length > 1 ? this.#r.search : "";
  }
  set search(v) {
    const s = String(v).replace(/^\?/, "");
    this.#r.search = s ? "?" + encodeQuery(s) : "";
    URLSearchParams._reset(this.#params, s);
  }
  get searchParams() {
    return this.#params;
  }
  get hash() {
    return this.#r.hash.length > 1 ? this.#r.hash : "";
  }
  set hash(v) {
    const s = String(v).replace(/^#/, "");
    this.#r.hash = s ? "#" + percentEncode(s, "?/") : "";
  }
  toString() {
    return this.href;
  }
  toJSON() {
    return this.href;
  }
  get [Symbol.toStringTag]() {
    return "URL";
  }
}

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

// ---------------------------------------------------------------- structuredClone, crypto

export function structuredClone(value, options = undefined) {
  void options;
  const seen = new MapCtor();
  const clone = (v) => {
    if (v === null || (typeof v !== "object" && typeof v !== "function")) {
      if (typeof v === "symbol") throw new DOMException("Symbol could not be cloned", "DataCloneError");
      return v;
    }
    if (typeof v === "function") throw new DOMException("function could not be cloned", "DataCloneError");
    if (seen.has(v)) return seen.get(v);
    let out;
    if (isDate(v)) out = new Date(v.getTime());
    else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
    else if (isArrayBuffer(v)) out = v.slice(0);
    else if (isTypedArray(v)) out = new v.constructor(v);
    else if (v instanceof MapCtor) {
      out = new MapCtor();
      seen.set(v, out);
      for (const [k, val] of v) out.set(clone(k), clone(val));
      return out;
    } else if (v instanceof SetCtor) {
      out = new SetCtor();
      seen.set(v, out);
      for (const val of v) out.add(clone(val));
      return out;
    } else if (v instanceof Error) {
      out = new Error(v.message);
      out.name = v.name;
    } else if (ArrayIsArray(v)) {
      out = [];
      seen.set(v, out);
      for (let i = 0; i < v.length; i++) out[i] = clone(v[i]);
      return out;
    } else {
      if (v instanceof Promise || v instanceof WeakMap || v instanceof WeakSet) {
        throw new DOMException("value could not be cloned", "DataCloneError");
      }
      out = {};
      seen.set(v, out);
      for (const k of Object.keys(v)) out[k] = clone(v[k]);
      return out;
    }
    seen.set(v, out);
    return out;
  };
  return clone(value);
}

export const crypto = {
  getRandomValues(array) {
    if (!isTypedArray(array) || array instanceof Float32Array || array instanceof Float64Array) {
      throw new TypeError("getRandomValues: argument must be an integer typed array");
    }
    if (array.byteLength > 65536) {
      throw new DOMException("getRandomValues: at most 65536 bytes per call", "QuotaExceededError");
    }
    randomBytesInto(new Uint8ArrayCtor(array.buffer, array.byteOffset, array.byteLength));
    return array;
  },
  randomUUID() {
    const b = randomBytesInto(new Uint8ArrayCtor(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = "";
    for (let i = 0; i < 16; i++) hex += (b[i] < 16 ? "0" : "") + b[i].toString(16);
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  },
};

export { ArrayBufferCtor };
