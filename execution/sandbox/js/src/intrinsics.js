// Built-ins captured before any bundle code runs, so a bundle that replaces JSON.stringify,
// Array.prototype.push or Promise.prototype.then cannot steer the runtime's own plumbing.
const uncurry = (fn) => Function.prototype.call.bind(fn);

export const ObjectKeys = Object.keys;
export const ObjectCreate = Object.create;
export const ObjectFreeze = Object.freeze;
export const ObjectDefineProperty = Object.defineProperty;
export const ObjectGetOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
export const ObjectGetOwnPropertyNames = Object.getOwnPropertyNames;
export const ObjectGetPrototypeOf = Object.getPrototypeOf;
export const ObjectPrototype = Object.prototype;
export const ObjectIs = Object.is;
export const ObjectSetPrototypeOf = Object.setPrototypeOf;
export const hasOwn = Object.hasOwn;
export const ArrayIsArray = Array.isArray;
export const JSONStringify = JSON.stringify;
export const JSONParse = JSON.parse;
export const StringCtor = String;
export const NumberCtor = Number;
export const NumberIsFinite = Number.isFinite;
export const MathFloor = Math.floor;
export const MathMin = Math.min;
export const MathMax = Math.max;
export const ReflectApply = Reflect.apply;
export const ReflectOwnKeys = Reflect.ownKeys;
export const PromiseCtor = Promise;
export const PromiseResolve = Promise.resolve.bind(Promise);
export const PromiseThen = uncurry(Promise.prototype.then);
export const ErrorCtor = Error;
export const TypeErrorCtor = TypeError;
export const RangeErrorCtor = RangeError;
export const InternalErrorCtor = globalThis.InternalError;
export const RangeErrorPrototype = RangeError.prototype;
// True only for objects with the [[ErrorData]] slot (never a Proxy); false everywhere without it.
export const ErrorIsError = typeof Error.isError === "function" ? Error.isError : () => false;
export const InternalErrorPrototype = typeof InternalError === "function" ? InternalError.prototype : null;
export const RegExpExec = uncurry(RegExp.prototype.exec);
export const ErrorPrototypeToString = Error.prototype.toString;
export const ArrayPush = uncurry(Array.prototype.push);
export const ArrayJoin = uncurry(Array.prototype.join);
export const ArraySlice = uncurry(Array.prototype.slice);
export const ArraySort = uncurry(Array.prototype.sort);
export const StringSlice = uncurry(String.prototype.slice);
export const StringCharCodeAt = uncurry(String.prototype.charCodeAt);
export const StringIndexOf = uncurry(String.prototype.indexOf);
export const StringToLowerCase = uncurry(String.prototype.toLowerCase);
export const StringFromCharCode = String.fromCharCode;
export const MapCtor = Map;
export const MapGet = uncurry(Map.prototype.get);
export const MapSet = uncurry(Map.prototype.set);
export const MapHas = uncurry(Map.prototype.has);
export const MapDelete = uncurry(Map.prototype.delete);
export const MapEntries = uncurry(Map.prototype.entries);
export const MapSize = uncurry(Object.getOwnPropertyDescriptor(Map.prototype, "size").get);
export const MapIteratorNext = uncurry(Object.getPrototypeOf(new Map().entries()).next);
export const SetCtor = Set;
export const SetAdd = uncurry(Set.prototype.add);
export const SetHas = uncurry(Set.prototype.has);
export const SetDelete = uncurry(Set.prototype.delete);
export const WeakMapCtor = WeakMap;
export const WeakMapGet = uncurry(WeakMap.prototype.get);
export const WeakMapSet = uncurry(WeakMap.prototype.set);
export const WeakMapHas = uncurry(WeakMap.prototype.has);
export const WeakSetCtor = WeakSet;
export const WeakSetAdd = uncurry(WeakSet.prototype.add);
export const WeakSetHas = uncurry(WeakSet.prototype.has);
export const Uint8ArrayCtor = Uint8Array;
export const ArrayBufferCtor = ArrayBuffer;
export const ArrayBufferIsView = ArrayBuffer.isView;
export const DateCtor = Date;
export const DateToISOString = uncurry(Date.prototype.toISOString);
export const DateGetTime = uncurry(Date.prototype.getTime);
export const performanceNow = performance.now.bind(performance);
export const fromBase64 = Uint8Array.fromBase64;
export const toBase64 = uncurry(Uint8Array.prototype.toBase64);
export const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype);
const typedArrayLengthGetter = Object.getOwnPropertyDescriptor(TypedArrayPrototype, "length").get;
export const typedArrayLength = uncurry(typedArrayLengthGetter);
// Byte copies for the web modules (fetch bodies, streams), whatever a bundle did to the prototypes.
export const TypedArraySet = uncurry(TypedArrayPrototype.set);
export const TypedArraySlice = uncurry(TypedArrayPrototype.slice);
export const TypedArraySubarray = uncurry(TypedArrayPrototype.subarray);
export const ArrayBufferSlice = uncurry(ArrayBuffer.prototype.slice);
export const SetSize = uncurry(Object.getOwnPropertyDescriptor(Set.prototype, "size").get);
export const SetValues = uncurry(Set.prototype.values);
export const SetIteratorNext = uncurry(Object.getPrototypeOf(new Set().values()).next);
const arrayBufferByteLengthGetter = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, "byteLength").get;
export const arrayBufferByteLength = uncurry(arrayBufferByteLengthGetter);
export const queueMicrotaskNative = globalThis.queueMicrotask;
export { uncurry };

// An array for the runtime's own use: with no prototype, no index accessor, iterator or toJSON a
// bundle defines on Array.prototype or Object.prototype can see or change what is stored in it.
export function list() {
  const a = [];
  ObjectSetPrototypeOf(a, null);
  return a;
}

// Entries of a Map as [key, value] pairs, iterated with the built-ins captured above.
export function mapEntries(map) {
  const out = list();
  const it = MapEntries(map);
  for (;;) {
    const step = MapIteratorNext(it);
    if (step.done) return out;
    ArrayPush(out, step.value);
  }
}

const typedArrayTag = uncurry(Object.getOwnPropertyDescriptor(TypedArrayPrototype, Symbol.toStringTag).get);

// A genuine Uint8Array, read from its internal slot (a subclass instance counts, a look-alike not).
export function isUint8Array(value) {
  return value !== null && typeof value === "object" && typedArrayTag(value) === "Uint8Array";
}

export function isDate(value) {
  // The internal slot check: getTime throws on anything that is not a real Date.
  try {
    DateGetTime(value);
    return true;
  } catch {
    return false;
  }
}

export function isTypedArray(value) {
  try {
    typedArrayLength(value);
    return true;
  } catch {
    return false;
  }
}

export function isArrayBuffer(value) {
  try {
    arrayBufferByteLength(value);
    return true;
  } catch {
    return false;
  }
}
