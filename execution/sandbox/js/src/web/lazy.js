// Lazily installed globals and the runtime hooks their implementations need.
//
// The heavy web-platform modules (streams, events, Blob/FormData) are evaluated on first use: each
// global starts as an accessor that loads its module, then redefines itself (and the other globals
// of that module still holding their accessor) as plain writable data properties. A bundle that
// never touches them pays nothing in the zygote's heap. Assigning a global first replaces it
// without loading anything.
import { ObjectDefineProperty, ObjectGetOwnPropertyDescriptor } from "../intrinsics.js";

// What lazily evaluated modules need from runtime.js (timers, error reporting), set by runtime.js at
// startup: those modules cannot import the entry module.
export const hooks = {
  __proto__: null,
  setTimer: null, // (callback, ms) -> id, on the call's own timers
  clearTimer: null, // (id)
  reportError: null, // (error): logged as an uncaught error
};

function dataProperty(name, value) {
  ObjectDefineProperty(globalThis, name, { value, writable: true, enumerable: false, configurable: true });
}

// `load()` returns the module's exports, or null while that module is still being evaluated (its
// own globals then read as absent: event-target-shim probes `Event` to decide whether to wrap a
// native one); `names` lists the exports installed as globals.
export function lazyGlobals(names, load) {
  const getters = { __proto__: null };
  const materialize = () => {
    const exports = load();
    if (exports === null) return null;
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      const desc = ObjectGetOwnPropertyDescriptor(globalThis, name);
      if (desc !== undefined && desc.get === getters[name]) dataProperty(name, exports[name]);
    }
    return exports;
  };
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const get = function () {
      const exports = materialize();
      return exports === null ? undefined : exports[name];
    };
    getters[name] = get;
    ObjectDefineProperty(globalThis, name, {
      get,
      set(value) {
        dataProperty(name, value);
      },
      enumerable: false,
      configurable: true,
    });
  }
}

// The lazily evaluated modules' private exports, set by each module when it is evaluated
// (web/modules.js loads them): plain objects, so loading one needs no module-namespace plumbing.
export const loaded = { __proto__: null, streams: null, events: null, blob: null };

// One lazily built value on `target` (a global, or a property of one such as `crypto.subtle`): an
// accessor that calls `load()` on first read and then replaces itself with a plain writable data
// property (assigning first also works). `typeof Buffer` builds it too: code that tests for a
// global then uses it.
export function defineLazyGlobal(target, name, load) {
  ObjectDefineProperty(target, name, {
    configurable: true,
    enumerable: false,
    get() {
      const value = load();
      ObjectDefineProperty(target, name, { value, writable: true, enumerable: false, configurable: true });
      return value;
    },
    set(value) {
      ObjectDefineProperty(target, name, { value, writable: true, enumerable: false, configurable: true });
    },
  });
}
