// crypto.subtle (W3C Web Cryptography API) for the sandbox: digest (SHA-1/256/384/512), HMAC,
// AES-GCM, PBKDF2 and HKDF, over @noble/hashes and @noble/ciphers (audited, pure JS). Evaluated on
// the first read of crypto.subtle, SubtleCrypto or CryptoKey (web/crypto.js requires it lazily).
// Methods return promises and fail with the DOMException names the standard gives
// (NotSupportedError, InvalidAccessError, OperationError, SyntaxError, DataError).
import { sha1 } from "@noble/hashes/legacy.js";
import { sha256, sha384, sha512 } from "@noble/hashes/sha2.js";
import { hmac } from "@noble/hashes/hmac.js";
import { pbkdf2 } from "@noble/hashes/pbkdf2.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { gcm } from "@noble/ciphers/aes.js";
import { Uint8ArrayCtor, fromBase64, isArrayBuffer, isTypedArray, toBase64 } from "../intrinsics.js";
import { randomBytesInto } from "../random.js";
import { DOMException } from "./dom-exception.js";

const HASHES = {
  __proto__: null,
  "SHA-1": { fn: sha1, block: 512, jwk: "1" },
  "SHA-256": { fn: sha256, block: 512, jwk: "256" },
  "SHA-384": { fn: sha384, block: 1024, jwk: "384" },
  "SHA-512": { fn: sha512, block: 1024, jwk: "512" },
};
const NAMES = ["SHA-1", "SHA-256", "SHA-384", "SHA-512", "HMAC", "AES-GCM", "PBKDF2", "HKDF"];
const AES_USAGES = ["encrypt", "decrypt", "wrapKey", "unwrapKey"];
const HMAC_USAGES = ["sign", "verify"];
const KDF_USAGES = ["deriveBits", "deriveKey"];
const GCM_TAG_BITS = [32, 64, 96, 104, 112, 120, 128];

const fail = (name, message) => new DOMException(message, name);
const notSupported = () => fail("NotSupportedError", "Unrecognized algorithm name");
const invalidAccess = () => fail("InvalidAccessError", "The requested operation is not valid for the provided key");
const operationFailed = () => fail("OperationError", "The operation failed for an operation-specific reason");

// A copy of a BufferSource's bytes (the standard copies before the operation starts).
function bufferSource(data, what = "data") {
  if (isArrayBuffer(data)) return new Uint8ArrayCtor(data.slice(0));
  if (isTypedArray(data) || data instanceof DataView) {
    return new Uint8ArrayCtor(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  }
  throw new TypeError(`Failed to execute: ${what} is not of type 'ArrayBuffer' or 'ArrayBufferView'`);
}

function algorithmName(alg) {
  let name;
  if (typeof alg === "string") name = alg;
  else if (alg !== null && typeof alg === "object" && alg.name !== undefined) name = String(alg.name);
  else throw new TypeError("Algorithm: name is missing");
  const upper = name.toUpperCase();
  for (const known of NAMES) if (known === upper) return known;
  throw notSupported();
}

// {name, ...members} with the name canonical and a `hash` member normalized to a known hash.
function normalize(alg) {
  const name = algorithmName(alg);
  const out = { ...(typeof alg === "object" ? alg : {}), name };
  if ("hash" in out && out.hash !== undefined) {
    const hash = algorithmName(out.hash);
    if (!(hash in HASHES)) throw notSupported();
    out.hash = hash;
  }
  return out;
}

function hashOf(alg) {
  if (alg.hash === undefined) throw new TypeError(`${alg.name}: hash is required`);
  return alg.hash;
}

// ---------------------------------------------------------------- CryptoKey

let keyMaterial; // (key) => Uint8Array, set by CryptoKey's static block
let makeKey;
let constructing = false;

export class CryptoKey {
  static {
    keyMaterial = (key) => key.#material;
    makeKey = (type, extractable, algorithm, usages, material) => {
      constructing = true;
      try {
        const key = new CryptoKey();
        key.#type = type;
        key.#extractable = extractable;
        key.#algorithm = algorithm;
        key.#usages = usages;
        key.#material = material;
        return key;
      } finally {
        constructing = false;
      }
    };
  }
  #type;
  #extractable;
  #algorithm;
  #usages;
  #material;
  constructor() {
    if (!constructing) throw new TypeError("Illegal constructor");
  }
  get type() {
    return this.#type;
  }
  get extractable() {
    return this.#extractable;
  }
  get algorithm() {
    const a = this.#algorithm;
    return a.hash ? { ...a, hash: { name: a.hash } } : { ...a };
  }
  get usages() {
    return this.#usages.slice();
  }
  get [Symbol.toStringTag]() {
    return "CryptoKey";
  }
}

function materialOf(key) {
  try {
    return keyMaterial(key);
  } catch {
    throw new TypeError("parameter is not of type 'CryptoKey'");
  }
}

// The key checked for the operation: same algorithm, and the usage among its usages.
function useKey(key, name, usage) {
  const material = materialOf(key);
  if (key.algorithm.name !== name || key.usages.indexOf(usage) < 0) throw invalidAccess();
  return material;
}

function checkUsages(usages, allowed, name) {
  const list = Array.from(usages);
  for (const u of list) {
    if (allowed.indexOf(u) < 0) throw fail("SyntaxError", `Unsupported key usage for ${name === "AES-GCM" ? "an AES" : "a " + name} key`);
  }
  // The standard's order of usages, each once.
  return ["encrypt", "decrypt", "sign", "verify", "deriveKey", "deriveBits", "wrapKey", "unwrapKey"].filter((u) => list.indexOf(u) >= 0);
}

function secretKey(alg, extractable, usages, material) {
  if (usages.length === 0) throw fail("SyntaxError", "Usages cannot be empty when importing a secret key.");
  return makeKey("secret", Boolean(extractable), alg, usages, material);
}

// ---------------------------------------------------------------- base64url (JWK)

function b64url(bytes) {
  return toBase64(bytes, { alphabet: "base64url", omitPadding: true });
}

function fromB64url(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw fail("DataError", "Invalid keyData");
  try {
    return fromBase64(text, { alphabet: "base64url" });
  } catch {
    throw fail("DataError", "Invalid keyData");
  }
}

function jwkMaterial(jwk, extractable, usages, expectedAlg) {
  if (jwk === null || typeof jwk !== "object") throw new TypeError("keyData must be a JsonWebKey");
  if (jwk.kty !== "oct") throw fail("DataError", "Invalid JWK \"kty\" Parameter");
  if (jwk.use !== undefined && jwk.use !== "enc" && jwk.use !== "sig") throw fail("DataError", "Invalid JWK \"use\" Parameter");
  if (jwk.key_ops !== undefined) {
    if (!Array.isArray(jwk.key_ops)) throw fail("DataError", "Invalid JWK \"key_ops\" Parameter");
    for (const u of usages) if (jwk.key_ops.indexOf(u) < 0) throw fail("DataError", "Key operations and usage mismatch");
  }
  if (jwk.ext === false && extractable) throw fail("DataError", "JWK \"ext\" Parameter and extractable mismatch");
  const material = fromB64url(jwk.k);
  if (jwk.alg !== undefined && expectedAlg !== null && jwk.alg !== expectedAlg(material)) {
    throw fail("DataError", "JWK \"alg\" does not match the requested algorithm");
  }
  return material;
}

// ---------------------------------------------------------------- import / generate / export

function aesLength(bits) {
  if (bits !== 128 && bits !== 192 && bits !== 256) throw fail("DataError", "Invalid key length");
  return bits;
}

function importKeyNow(format, keyData, algorithm, extractable, keyUsages) {
  const alg = normalize(algorithm);
  const fmt = String(format);
  if (fmt !== "raw" && fmt !== "jwk") {
    if (fmt === "spki" || fmt === "pkcs8") throw fail("NotSupportedError", `Unable to import ${alg.name} key with format ${fmt}`);
    throw new TypeError(`Invalid format: ${fmt}`);
  }
  if (alg.name === "AES-GCM") {
    const usages = checkUsages(keyUsages, AES_USAGES, alg.name);
    const material =
      fmt === "raw"
        ? bufferSource(keyData, "keyData")
        : jwkMaterial(keyData, extractable, usages, (m) => `A${m.length * 8}GCM`);
    return secretKey({ name: "AES-GCM", length: aesLength(material.length * 8) }, extractable, usages, material);
  }
  if (alg.name === "HMAC") {
    const usages = checkUsages(keyUsages, HMAC_USAGES, alg.name);
    const hash = hashOf(alg);
    const material =
      fmt === "raw" ? bufferSource(keyData, "keyData") : jwkMaterial(keyData, extractable, usages, () => `HS${HASHES[hash].jwk}`);
    let length = material.length * 8;
    if (length === 0) throw fail("DataError", "Zero-length key is not supported");
    if (alg.length !== undefined) {
      const want = Number(alg.length);
      if (want > length || want <= length - 8) throw fail("DataError", "Invalid key length");
      length = want;
    }
    return secretKey({ name: "HMAC", hash, length }, extractable, usages, material);
  }
  if (alg.name === "PBKDF2" || alg.name === "HKDF") {
    if (fmt !== "raw") throw fail("NotSupportedError", `Unable to import ${alg.name} key with format ${fmt}`);
    if (extractable) throw fail("SyntaxError", `${alg.name} keys are not extractable`);
    const usages = checkUsages(keyUsages, KDF_USAGES, alg.name);
    return secretKey({ name: alg.name }, false, usages, bufferSource(keyData, "keyData"));
  }
  throw fail("NotSupportedError", "Unrecognized algorithm name");
}

function randomKeyBytes(bits) {
  return randomBytesInto(new Uint8ArrayCtor(Math.ceil(bits / 8)));
}

function generateKeyNow(algorithm, extractable, keyUsages) {
  const alg = normalize(algorithm);
  if (alg.name === "AES-GCM") {
    const usages = checkUsages(keyUsages, AES_USAGES, alg.name);
    const length = Number(alg.length);
    if (length !== 128 && length !== 192 && length !== 256) throw fail("OperationError", "AES key length must be 128, 192 or 256 bits");
    return secretKey({ name: "AES-GCM", length }, extractable, usages, randomKeyBytes(length));
  }
  if (alg.name === "HMAC") {
    const usages = checkUsages(keyUsages, HMAC_USAGES, alg.name);
    const hash = hashOf(alg);
    const length = alg.length === undefined ? HASHES[hash].block : Number(alg.length);
    if (!(length > 0)) throw fail("OperationError", "Invalid HMAC key length");
    const material = randomKeyBytes(length);
    if (length % 8) material[material.length - 1] &= 0xff << (8 - (length % 8));
    return secretKey({ name: "HMAC", length, hash }, extractable, usages, material);
  }
  if (alg.name === "PBKDF2" || alg.name === "HKDF") throw fail("NotSupportedError", `Unable to generate a ${alg.name} key`);
  throw notSupported();
}

function exportKeyNow(format, key) {
  const material = materialOf(key);
  if (!key.extractable) throw fail("InvalidAccessError", "key is not extractable");
  const fmt = String(format);
  const alg = key.algorithm;
  if (fmt === "raw") return material.slice().buffer;
  if (fmt === "jwk") {
    const jwk = { key_ops: key.usages, ext: true, kty: "oct", k: b64url(material) };
    if (alg.name === "HMAC") jwk.alg = `HS${HASHES[alg.hash.name].jwk}`;
    else if (alg.name === "AES-GCM") jwk.alg = `A${alg.length}GCM`;
    return jwk;
  }
  if (fmt === "spki" || fmt === "pkcs8") throw fail("InvalidAccessError", `Unable to export a raw ${alg.name} key as ${fmt}`);
  throw new TypeError(`Invalid format: ${fmt}`);
}

// ---------------------------------------------------------------- operations

function digestNow(algorithm, data) {
  const name = algorithmName(algorithm);
  if (!(name in HASHES)) throw notSupported();
  return HASHES[name].fn(bufferSource(data)).buffer;
}

function hmacOf(key, data) {
  const alg = key.algorithm;
  return hmac(HASHES[alg.hash.name].fn, keyMaterial(key), data);
}

function signNow(algorithm, key, data) {
  const alg = normalize(algorithm);
  if (alg.name !== "HMAC") throw notSupported();
  useKey(key, "HMAC", "sign");
  return hmacOf(key, bufferSource(data)).buffer;
}

function verifyNow(algorithm, key, signature, data) {
  const alg = normalize(algorithm);
  if (alg.name !== "HMAC") throw notSupported();
  useKey(key, "HMAC", "verify");
  const given = bufferSource(signature, "signature");
  const mac = hmacOf(key, bufferSource(data));
  if (given.length !== mac.length) return false;
  let diff = 0;
  for (let i = 0; i < mac.length; i++) diff |= mac[i] ^ given[i];
  return diff === 0;
}

function gcmParams(alg) {
  if (alg.iv === undefined) throw new TypeError("AES-GCM: iv is required");
  const iv = bufferSource(alg.iv, "iv");
  // @noble/ciphers takes IVs of 8 bytes or more (the standard allows any non-empty IV; 12 is usual).
  if (iv.length < 8) throw fail("OperationError", "AES-GCM: the sandbox supports IVs of 8 bytes or more");
  const tagBits = alg.tagLength === undefined ? 128 : Number(alg.tagLength);
  if (GCM_TAG_BITS.indexOf(tagBits) < 0) throw fail("OperationError", `${tagBits} is not a valid AES-GCM tag length`);
  const aad = alg.additionalData === undefined ? undefined : bufferSource(alg.additionalData, "additionalData");
  return { iv, aad, tagBytes: tagBits / 8 };
}

function encryptNow(algorithm, key, data) {
  const alg = normalize(algorithm);
  if (alg.name !== "AES-GCM") throw notSupported();
  const material = useKey(key, "AES-GCM", "encrypt");
  const { iv, aad, tagBytes } = gcmParams(alg);
  const sealed = gcm(material, iv, aad).encrypt(bufferSource(data));
  // A shorter tag is the full tag's leading bytes (NIST SP 800-38D).
  return (tagBytes === 16 ? sealed : sealed.slice(0, sealed.length - 16 + tagBytes)).buffer;
}

function decryptNow(algorithm, key, data) {
  const alg = normalize(algorithm);
  if (alg.name !== "AES-GCM") throw notSupported();
  const material = useKey(key, "AES-GCM", "decrypt");
  const { iv, aad, tagBytes } = gcmParams(alg);
  const input = bufferSource(data);
  if (input.length < tagBytes) throw operationFailed();
  try {
    if (tagBytes === 16) return gcm(material, iv, aad).decrypt(input).buffer;
    // Truncated tag: recover the plaintext with the (XOR) keystream, then recompute the full tag
    // over the ciphertext and compare its leading bytes.
    const ciphertext = input.subarray(0, input.length - tagBytes);
    const plain = gcm(material, iv, aad).encrypt(ciphertext).subarray(0, ciphertext.length);
    const full = gcm(material, iv, aad).encrypt(plain);
    let diff = 0;
    for (let i = 0; i < tagBytes; i++) diff |= full[ciphertext.length + i] ^ input[ciphertext.length + i];
    if (diff !== 0) throw operationFailed();
    return plain.slice().buffer;
  } catch {
    throw operationFailed();
  }
}

function deriveBitsNow(algorithm, baseKey, length) {
  const alg = normalize(algorithm);
  if (alg.name !== "PBKDF2" && alg.name !== "HKDF") throw notSupported();
  const material = useKey(baseKey, alg.name, "deriveBits");
  if (length === null || length === undefined) throw fail("OperationError", "length cannot be null");
  const bits = Number(length);
  if (!(bits >= 0) || bits % 8 !== 0) throw fail("OperationError", "length must be a multiple of 8");
  const hash = HASHES[hashOf(alg)].fn;
  if (bits === 0) return new ArrayBuffer(0);
  if (alg.name === "PBKDF2") {
    const iterations = Number(alg.iterations);
    if (!(iterations > 0)) throw fail("OperationError", "iterations cannot be zero");
    return pbkdf2(hash, material, bufferSource(alg.salt, "salt"), { c: iterations, dkLen: bits / 8 }).buffer;
  }
  const salt = bufferSource(alg.salt, "salt");
  const info = bufferSource(alg.info, "info");
  try {
    return hkdf(hash, material, salt, info, bits / 8).buffer;
  } catch {
    throw fail("OperationError", "HKDF: the requested length is too large");
  }
}

function derivedKeyLength(alg) {
  if (alg.name === "AES-GCM") return aesLength(Number(alg.length));
  if (alg.name === "HMAC") return alg.length === undefined ? HASHES[hashOf(alg)].block : Number(alg.length);
  throw notSupported();
}

function deriveKeyNow(algorithm, baseKey, derivedKeyType, extractable, keyUsages) {
  const target = normalize(derivedKeyType);
  const alg = normalize(algorithm);
  if (alg.name !== "PBKDF2" && alg.name !== "HKDF") throw notSupported();
  useKey(baseKey, alg.name, "deriveKey");
  const length = derivedKeyLength(target);
  const material = keyMaterial(baseKey);
  const sub = makeKey("secret", false, { name: alg.name }, ["deriveBits"], material);
  const bits = deriveBitsNow(alg, sub, length);
  return importKeyNow("raw", bits, target, extractable, keyUsages);
}

// ---------------------------------------------------------------- SubtleCrypto

let constructingSubtle = false;
// Every method runs its steps synchronously inside a promise: an error becomes a rejection.
const later = (fn) => new Promise((resolve) => resolve(fn()));

export class SubtleCrypto {
  constructor() {
    if (!constructingSubtle) throw new TypeError("Illegal constructor");
  }
  digest(algorithm, data) {
    return later(() => digestNow(algorithm, data));
  }
  importKey(format, keyData, algorithm, extractable, keyUsages) {
    return later(() => importKeyNow(format, keyData, algorithm, extractable, keyUsages));
  }
  exportKey(format, key) {
    return later(() => exportKeyNow(format, key));
  }
  generateKey(algorithm, extractable, keyUsages) {
    return later(() => generateKeyNow(algorithm, extractable, keyUsages));
  }
  sign(algorithm, key, data) {
    return later(() => signNow(algorithm, key, data));
  }
  verify(algorithm, key, signature, data) {
    return later(() => verifyNow(algorithm, key, signature, data));
  }
  encrypt(algorithm, key, data) {
    return later(() => encryptNow(algorithm, key, data));
  }
  decrypt(algorithm, key, data) {
    return later(() => decryptNow(algorithm, key, data));
  }
  deriveBits(algorithm, baseKey, length) {
    return later(() => deriveBitsNow(algorithm, baseKey, length));
  }
  deriveKey(algorithm, baseKey, derivedKeyType, extractable, keyUsages) {
    return later(() => deriveKeyNow(algorithm, baseKey, derivedKeyType, extractable, keyUsages));
  }
  wrapKey() {
    return Promise.reject(fail("NotSupportedError", "wrapKey is not supported in the sandbox"));
  }
  unwrapKey() {
    return Promise.reject(fail("NotSupportedError", "unwrapKey is not supported in the sandbox"));
  }
  get [Symbol.toStringTag]() {
    return "SubtleCrypto";
  }
}

constructingSubtle = true;
export const subtle = new SubtleCrypto();
constructingSubtle = false;
