// node:crypto: randomness from the sandbox's own generator (random.js, seeded by the host per
// call), hashes and HMAC from @noble/hashes, and the runtime's web crypto as `webcrypto`/`subtle`.
import { Buffer } from "buffer";
import { md5, sha1, ripemd160 } from "@noble/hashes/legacy.js";
import { sha224, sha256, sha384, sha512, sha512_224, sha512_256 } from "@noble/hashes/sha2.js";
import { sha3_224, sha3_256, sha3_384, sha3_512 } from "@noble/hashes/sha3.js";
import { hmac } from "@noble/hashes/hmac.js";
import { pbkdf2 as noblePbkdf2 } from "@noble/hashes/pbkdf2.js";
import { host } from "./host.js";

const { randomBytesInto, crypto: webcrypto } = host;

const HASHES = {
  __proto__: null,
  md5,
  sha1,
  ripemd160,
  rmd160: ripemd160,
  sha224,
  sha256,
  sha384,
  sha512,
  "sha512-224": sha512_224,
  "sha512-256": sha512_256,
  "sha3-224": sha3_224,
  "sha3-256": sha3_256,
  "sha3-384": sha3_384,
  "sha3-512": sha3_512,
};

// Node (OpenSSL) accepts names case-insensitively, with an "RSA-" prefix and as "SHA-256".
function hashNamed(algorithm) {
  let name = String(algorithm).toLowerCase();
  if (name.startsWith("rsa-")) name = name.slice(4);
  const alias = name.replace(/^sha-(\d)/, "sha$1").replace(/^sha(\d+)-(\d+)$/, "sha$1-$2");
  const hash = HASHES[alias] || HASHES[name];
  if (!hash) {
    const error = new Error("Digest method not supported");
    error.code = "ERR_OSSL_EVP_UNSUPPORTED";
    throw error;
  }
  return hash;
}

function toBytes(data, encoding, what = "data") {
  if (typeof data === "string") return Buffer.from(data, encoding || "utf8");
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  const error = new TypeError(
    `The "${what}" argument must be of type string or an instance of Buffer, TypedArray, or DataView.`,
  );
  error.code = "ERR_INVALID_ARG_TYPE";
  throw error;
}

function output(bytes, encoding) {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return encoding === undefined || encoding === "buffer" ? buf : buf.toString(encoding);
}

function digestError() {
  const error = new Error("Digest already called");
  error.code = "ERR_CRYPTO_HASH_FINALIZED";
  return error;
}

class Hash {
  #state;
  #done = false;
  constructor(algorithm, state = undefined) {
    this.#state = state || hashNamed(algorithm).create();
  }
  update(data, inputEncoding) {
    if (this.#done) throw digestError();
    this.#state.update(toBytes(data, inputEncoding));
    return this;
  }
  digest(encoding) {
    if (this.#done) throw digestError();
    this.#done = true;
    return output(this.#state.digest(), encoding);
  }
  copy() {
    if (this.#done) throw digestError();
    return new Hash(null, this.#state.clone());
  }
}

class Hmac {
  #state;
  #done = false;
  constructor(algorithm, key) {
    const keyBytes = key && typeof key === "object" && typeof key.export === "function" ? key.export() : key;
    this.#state = hmac.create(hashNamed(algorithm), toBytes(keyBytes, "utf8", "key"));
  }
  update(data, inputEncoding) {
    if (this.#done) throw digestError();
    this.#state.update(toBytes(data, inputEncoding));
    return this;
  }
  digest(encoding) {
    if (this.#done) throw digestError();
    this.#done = true;
    return output(this.#state.digest(), encoding);
  }
}

function checkSize(size, name = "size") {
  if (typeof size !== "number" || !(size >= 0 && size <= 2 ** 31 - 1) || size % 1 !== 0) {
    const error = new RangeError(`The value of "${name}" is out of range. Received ${String(size)}`);
    error.code = "ERR_OUT_OF_RANGE";
    throw error;
  }
}

// Callbacks run as a microtask (Node runs them on its thread pool, later than the caller).
function later(callback, ...args) {
  queueMicrotask(() => callback(...args));
}

function randomBytes(size, callback) {
  checkSize(size);
  const buf = Buffer.allocUnsafe(size);
  randomBytesInto(buf);
  if (typeof callback === "function") return void later(callback, null, buf);
  return buf;
}

function randomFillSync(target, offset = 0, size = undefined) {
  const view = toBytes(target, undefined, "buf");
  const end = size === undefined ? view.length : offset + size;
  checkSize(offset, "offset");
  if (end > view.length || end < offset) checkSize(-1, "size");
  randomBytesInto(view.subarray(offset, end));
  return target;
}

function randomFill(target, offset, size, callback) {
  if (typeof offset === "function") [offset, size, callback] = [0, undefined, offset];
  else if (typeof size === "function") [size, callback] = [undefined, size];
  randomFillSync(target, offset, size);
  later(callback, null, target);
}

// A uniform integer in [min, max) by rejection sampling over 48 bits, as Node does.
function randomInt(min, max, callback) {
  if (max === undefined || typeof max === "function") [min, max, callback] = [0, min, max];
  if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max)) {
    const error = new TypeError('The "min" and "max" arguments must be safe integers');
    error.code = "ERR_INVALID_ARG_TYPE";
    throw error;
  }
  const range = max - min;
  if (!(range > 0 && range <= 2 ** 48)) {
    const error = new RangeError(`The value of "max" is out of range. It must be greater than the value of "min" (${min}). Received ${max}`);
    error.code = "ERR_OUT_OF_RANGE";
    throw error;
  }
  const bytes = new Uint8Array(6);
  const limit = 2 ** 48 - (2 ** 48 % range);
  let x;
  do {
    randomBytesInto(bytes);
    x = bytes.reduce((acc, b) => acc * 256 + b, 0);
  } while (x >= limit);
  const n = min + (x % range);
  if (typeof callback === "function") return void later(callback, null, n);
  return n;
}

function timingSafeEqual(a, b) {
  const x = toBytes(a, undefined, "buf1");
  const y = toBytes(b, undefined, "buf2");
  if (x.length !== y.length) {
    const error = new RangeError("Input buffers must have the same byte length");
    error.code = "ERR_CRYPTO_TIMING_SAFE_EQUAL_LENGTH";
    throw error;
  }
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

function pbkdf2Sync(password, salt, iterations, keylen, digest) {
  const out = noblePbkdf2(hashNamed(digest), toBytes(password, "utf8", "password"), toBytes(salt, "utf8", "salt"), {
    c: iterations,
    dkLen: keylen,
  });
  return output(out, undefined);
}

function pbkdf2(password, salt, iterations, keylen, digest, callback) {
  let result;
  try {
    result = pbkdf2Sync(password, salt, iterations, keylen, digest);
  } catch (error) {
    return void later(callback, error);
  }
  later(callback, null, result);
}

const cryptoModule = {
  randomBytes,
  pseudoRandomBytes: randomBytes,
  randomFillSync,
  randomFill,
  randomInt,
  randomUUID: () => webcrypto.randomUUID(),
  getRandomValues: (array) => webcrypto.getRandomValues(array),
  createHash: (algorithm) => new Hash(algorithm),
  createHmac: (algorithm, key) => new Hmac(algorithm, key),
  hash: (algorithm, data, encoding = "hex") => new Hash(algorithm).update(data).digest(encoding),
  timingSafeEqual,
  pbkdf2,
  pbkdf2Sync,
  getHashes: () => Object.keys(HASHES).sort(),
  getCiphers: () => [],
  getCurves: () => [],
  constants: {},
  webcrypto,
  subtle: webcrypto.subtle,
  Hash,
  Hmac,
};

export default cryptoModule;
