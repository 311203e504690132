// Closes the ways bundle code could run outside the engine's time limit. The Python wrapper turns an
// exception that reaches it into text with no time limit in force (ToString of the error and a read
// of its `stack`), so every lookup that conversion makes on an engine-made error (interrupted, out
// of memory, stack overflow) must end at a property the bundle cannot replace.
import {
  ErrorPrototypeToString,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
  ReflectApply,
  queueMicrotaskNative,
} from "./intrinsics.js";

const stackDescriptor = ObjectGetOwnPropertyDescriptor(Error.prototype, "stack");

// An accessor whose setter gives the receiver its own data property: assignments like
// `this.name = "MyError"` in subclasses keep working, but the prototype's value cannot change.
function lockedProperty(proto, key, value) {
  ObjectDefineProperty(proto, key, {
    configurable: false,
    enumerable: false,
    get() {
      return value;
    },
    set(newValue) {
      if (this !== proto && this !== null && (typeof this === "object" || typeof this === "function")) {
        ObjectDefineProperty(this, key, { value: newValue, writable: true, enumerable: false, configurable: true });
      }
    },
  });
}

export function hardenErrors() {
  const ctors = [Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError, AggregateError];
  if (typeof InternalError === "function") ctors.push(InternalError);
  if (typeof SuppressedError === "function") ctors.push(SuppressedError);
  for (const ctor of ctors) {
    const proto = ctor.prototype;
    const name = proto.name;
    lockedProperty(proto, Symbol.toPrimitive, undefined);
    lockedProperty(proto, "toString", ErrorPrototypeToString);
    lockedProperty(proto, "name", name);
    lockedProperty(proto, "message", "");
    if (stackDescriptor && stackDescriptor.get) {
      ObjectDefineProperty(proto, "stack", {
        configurable: false,
        enumerable: false,
        get: stackDescriptor.get,
        set: stackDescriptor.set,
      });
    }
  }
  // Stack traces are formatted by the engine; a bundle's formatter would run while the engine builds
  // the interrupt error. Setting it is accepted and ignored so libraries that try still load.
  lockedProperty(Error, "prepareStackTrace", undefined);
}

// Jobs that throw surface in Python as an exception it converts without limits, so the two job
// kinds that run bundle callbacks directly are wrapped to report errors instead of throwing.
export function hardenJobs(reportUncaught) {
  const wrappedQueueMicrotask = function queueMicrotask(callback) {
    if (typeof callback !== "function") throw new TypeError("queueMicrotask: callback is not a function");
    ReflectApply(queueMicrotaskNative, undefined, [
      () => {
        try {
          callback();
        } catch (error) {
          reportUncaught(error);
        }
      },
    ]);
  };
  ObjectDefineProperty(globalThis, "queueMicrotask", {
    value: wrappedQueueMicrotask,
    writable: true,
    enumerable: false,
    configurable: true,
  });

  const NativeRegistry = globalThis.FinalizationRegistry;
  if (typeof NativeRegistry === "function") {
    const SafeRegistry = function FinalizationRegistry(cleanup) {
      if (new.target === undefined) throw new TypeError("Constructor FinalizationRegistry requires 'new'");
      if (typeof cleanup !== "function") throw new TypeError("cleanup must be callable");
      return new NativeRegistry((held) => {
        try {
          cleanup(held);
        } catch (error) {
          reportUncaught(error);
        }
      });
    };
    SafeRegistry.prototype = NativeRegistry.prototype;
    ObjectDefineProperty(NativeRegistry.prototype, "constructor", {
      value: SafeRegistry,
      writable: false,
      enumerable: false,
      configurable: false,
    });
    ObjectDefineProperty(globalThis, "FinalizationRegistry", {
      value: SafeRegistry,
      writable: true,
      enumerable: false,
      configurable: true,
    });
  }
}
