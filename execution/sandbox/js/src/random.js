// ChaCha20 keystream as the sandbox's only randomness source. The host seeds it per call: a call
// forked from a warm context would otherwise replay the parent's Math.random sequence.
import { Uint8ArrayCtor } from "./intrinsics.js";

const state = new Uint32Array(16);
const block = new Uint32Array(16);
const blockBytes = new Uint8ArrayCtor(block.buffer);
let offset = 64;

function rotl(x, n) {
  return (x << n) | (x >>> (32 - n));
}

function quarter(s, a, b, c, d) {
  s[a] = (s[a] + s[b]) | 0; s[d] = rotl(s[d] ^ s[a], 16);
  s[c] = (s[c] + s[d]) | 0; s[b] = rotl(s[b] ^ s[c], 12);
  s[a] = (s[a] + s[b]) | 0; s[d] = rotl(s[d] ^ s[a], 8);
  s[c] = (s[c] + s[d]) | 0; s[b] = rotl(s[b] ^ s[c], 7);
}

function refill() {
  block.set(state);
  for (let i = 0; i < 10; i++) {
    quarter(block, 0, 4, 8, 12); quarter(block, 1, 5, 9, 13);
    quarter(block, 2, 6, 10, 14); quarter(block, 3, 7, 11, 15);
    quarter(block, 0, 5, 10, 15); quarter(block, 1, 6, 11, 12);
    quarter(block, 2, 7, 8, 13); quarter(block, 3, 4, 9, 14);
  }
  for (let i = 0; i < 16; i++) block[i] = (block[i] + state[i]) | 0;
  state[12] = (state[12] + 1) | 0;
  if (state[12] === 0) state[13] = (state[13] + 1) | 0;
  offset = 0;
}

// seedHex: 64 hex characters (32 bytes) from the host's CSPRNG.
export function seedRandom(seedHex) {
  state[0] = 0x61707865; state[1] = 0x3320646e; state[2] = 0x79622d32; state[3] = 0x6b206574;
  for (let i = 0; i < 8; i++) state[4 + i] = parseInt(seedHex.slice(i * 8, i * 8 + 8), 16) | 0;
  state[12] = 0; state[13] = 0; state[14] = 0; state[15] = 0;
  offset = 64;
}

export function randomBytesInto(target) {
  for (let i = 0; i < target.length; i++) {
    if (offset >= 64) refill();
    target[i] = blockBytes[offset++];
  }
  return target;
}

const scratch = new Uint8ArrayCtor(7);
export function randomFloat() {
  randomBytesInto(scratch);
  // 53 random bits -> [0, 1)
  let hi = (scratch[0] & 0x1f) * 2 ** 48;
  hi += scratch[1] * 2 ** 40 + scratch[2] * 2 ** 32 + scratch[3] * 2 ** 24;
  hi += scratch[4] * 2 ** 16 + scratch[5] * 2 ** 8 + scratch[6];
  return hi / 2 ** 53;
}
