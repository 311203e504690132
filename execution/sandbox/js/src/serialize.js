// Turns bundle values into JSON text and log lines inside the engine, under the call's limits:
// getters, proxies and toJSON run here (interruptible), never in Python.
import {
  ArrayIsArray,
  ArrayJoin,
  ArrayPush,
  ErrorCtor,
  ErrorIsError,
  InternalErrorPrototype,
  JSONStringify,
  ObjectGetOwnPropertyDescriptor,
  ObjectGetPrototypeOf,
  ObjectKeys,
  ReflectApply,
  RangeErrorCtor,
  RangeErrorPrototype,
  SetAdd,
  SetCtor,
  SetDelete,
  SetHas,
  StringCtor,
  StringSlice,
  WeakMapCtor,
  WeakMapGet,
  WeakMapSet,
  hasOwn,
  isDate,
  DateToISOString,
  isTypedArray,
  list,
  typedArrayLength,
} from "./intrinsics.js";

export const MAX_DEPTH = 200;

// Errors the runtime raises on purpose carry a taxonomy code. The map is private, so bundle code
// can rethrow such an error but cannot mint one. `detailText` is JSON text the runtime built.
const faultCodes = new WeakMapCtor();

export function fault(code, message, ErrorType = ErrorCtor, detailText = "{}") {
  const error = new ErrorType(message);
  WeakMapSet(faultCodes, error, { __proto__: null, code, detailText });
  return error;
}

export function faultOf(error) {
  if (error === null || (typeof error !== "object" && typeof error !== "function")) return undefined;
  return WeakMapGet(faultCodes, error);
}

// The message an engine-made error carries as an own data property (undefined otherwise): read
// without getters, instanceof or Symbol.hasInstance, none of which a bundle can then replace, and
// never from a Proxy (whose traps could answer anything).
function engineMessage(error, prototype) {
  try {
    if (!ErrorIsError(error) || ObjectGetPrototypeOf(error) !== prototype) return undefined;
    const d = ObjectGetOwnPropertyDescriptor(error, "message");
    return d && hasOwn(d, "value") && typeof d.value === "string" ? d.value : undefined;
  } catch {
    return undefined;
  }
}

export function isStackOverflow(error) {
  return engineMessage(error, RangeErrorPrototype) === "Maximum call stack size exceeded";
}

export function isOutOfMemory(error) {
  // "string too long" is the engine's hard cap on one string (2^30 characters): a memory bomb too.
  const message = InternalErrorPrototype ? engineMessage(error, InternalErrorPrototype) : undefined;
  return message === "out of memory" || message === "string too long";
}

// JSON text of `value` like JSON.stringify, but cycles become "[Circular]", BigInt becomes a string,
// and it stops (output_limit) as soon as the text exceeds maxChars or nests deeper than maxDepth.
// The text is valid JSON whatever the bundle did to built-in prototypes: it is assembled in a
// prototype-less list from primitives only. Bundle values keep JSON semantics (toJSON, getters,
// proxies run here, inside the call's budget); with `plain` (the manifest, schema issues: data the
// runtime describes, not a value the tool returned) no toJSON is looked up, so a bundle's
// Object.prototype.toJSON cannot rewrite them.
export function toJSONText(value, maxChars, maxDepth = MAX_DEPTH, plain = false) {
  const parts = list();
  const ancestors = new SetCtor();
  let size = 0;
  const emit = (text) => {
    size += text.length;
    if (size > maxChars) {
      throw fault("output_limit", `output is larger than the limit of ${maxChars} bytes`, RangeErrorCtor);
    }
    ArrayPush(parts, text);
  };

  const write = (key, input, depth, inArray) => {
    let v = input;
    if (plain) {
      // JSON.parse output: primitives, arrays and plain objects with own data properties only.
    } else if (v !== null && (typeof v === "object" || typeof v === "function") && !isDate(v)) {
      const toJSON = v.toJSON;
      if (typeof toJSON === "function") v = ReflectApply(toJSON, v, [key]);
    } else if (isDate(v)) {
      try {
        v = DateToISOString(v);
      } catch {
        v = null;
      }
    }
    switch (typeof v) {
      case "string":
        // Checked before quoting so a 50 MB string is never copied.
        if (v.length > maxChars) emit(v);
        emit(JSONStringify(v));
        return true;
      case "number":
        emit(v === v && v !== Infinity && v !== -Infinity ? StringCtor(v) : "null");
        return true;
      case "boolean":
        emit(v ? "true" : "false");
        return true;
      case "bigint":
        emit(JSONStringify(StringCtor(v)));
        return true;
      case "undefined":
      case "function":
      case "symbol":
        if (inArray) emit("null");
        return inArray;
      default:
        break;
    }
    if (v === null) {
      emit("null");
      return true;
    }
    if (SetHas(ancestors, v)) {
      emit('"[Circular]"');
      return true;
    }
    if (depth >= maxDepth) {
      throw fault("output_limit", `output is nested deeper than ${maxDepth} levels`, RangeErrorCtor);
    }
    SetAdd(ancestors, v);
    const typed = isTypedArray(v);
    if (typed || ArrayIsArray(v)) {
      const length = typed ? typedArrayLength(v) : v.length >>> 0;
      emit("[");
      for (let i = 0; i < length; i++) {
        if (i > 0) emit(",");
        write(StringCtor(i), v[i], depth + 1, true);
      }
      emit("]");
    } else {
      const keys = ObjectKeys(v);
      emit("{");
      let first = true;
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i];
        const mark = parts.length;
        const markSize = size;
        emit(first ? "" : ",");
        emit(JSONStringify(k) + ":");
        if (!write(k, v[k], depth + 1, false)) {
          // Property had no JSON representation: drop what was emitted for it.
          parts.length = mark;
          size = markSize;
        } else {
          first = false;
        }
      }
      emit("}");
    }
    SetDelete(ancestors, v);
    return true;
  };

  if (!write("", value, 0, false)) return "null";
  return ArrayJoin(parts, "");
}

// A short, bounded, human-readable rendering for console output.
export function inspect(value, maxChars) {
  const seen = new SetCtor();
  const render = (v, depth) => {
    switch (typeof v) {
      case "string":
        return depth === 0 ? v : JSONStringify(v);
      case "number":
      case "boolean":
      case "undefined":
        return StringCtor(v);
      case "bigint":
        return StringCtor(v) + "n";
      case "symbol":
        return "Symbol()";
      case "function":
        return "[Function]";
      default:
        break;
    }
    if (v === null) return "null";
    if (v instanceof ErrorCtor) return describeError(v).stack || describeError(v).message;
    if (isDate(v)) {
      try {
        return DateToISOString(v);
      } catch {
        return "Invalid Date";
      }
    }
    if (SetHas(seen, v)) return "[Circular]";
    if (depth > 3) return ArrayIsArray(v) ? "[Array]" : "[Object]";
    SetAdd(seen, v);
    const out = list();
    let size = 0;
    if (ArrayIsArray(v)) {
      const length = v.length >>> 0;
      for (let i = 0; i < length && size < maxChars; i++) {
        const piece = render(v[i], depth + 1);
        size += piece.length + 2;
        ArrayPush(out, piece);
      }
      SetDelete(seen, v);
      return "[ " + ArrayJoin(out, ", ") + " ]";
    }
    const keys = ObjectKeys(v);
    for (let i = 0; i < keys.length && size < maxChars; i++) {
      const piece = keys[i] + ": " + render(v[keys[i]], depth + 1);
      size += piece.length + 2;
      ArrayPush(out, piece);
    }
    SetDelete(seen, v);
    return out.length ? "{ " + ArrayJoin(out, ", ") + " }" : "{}";
  };
  let text;
  try {
    text = render(value, 0);
  } catch (error) {
    text = "[uninspectable value: " + describeError(error).message + "]";
  }
  return text.length > maxChars ? StringSlice(text, 0, maxChars) : text;
}

function safeString(value, fallback) {
  try {
    if (typeof value === "string") return value;
    if (value === undefined || value === null) return fallback;
    if (typeof value === "symbol") return "Symbol()";
    if (typeof value === "object" || typeof value === "function") return fallback;
    return StringCtor(value);
  } catch {
    return fallback;
  }
}

// {name, message, stack} of anything thrown, reading only plain string properties: a thrown
// object's toString or Symbol.toPrimitive is never called.
export function describeError(error) {
  try {
    if (error !== null && (typeof error === "object" || typeof error === "function")) {
      let message = safeString(error.message, undefined);
      const name = safeString(error.name, "Error");
      const stack = safeString(error.stack, "");
      if (message === undefined) {
        let rendered;
        try {
          rendered = toJSONText(error.message !== undefined ? error.message : error, 2000);
        } catch {
          rendered = "[unserializable]";
        }
        message = "non-Error value thrown: " + rendered;
      }
      return { __proto__: null, name, message: StringSlice(message, 0, 4000), stack: StringSlice(stack, 0, 8000) };
    }
    return { __proto__: null, name: "Error", message: "non-Error value thrown: " + safeString(error, typeof error), stack: "" };
  } catch {
    return { __proto__: null, name: "Error", message: "unreadable error", stack: "" };
  }
}
