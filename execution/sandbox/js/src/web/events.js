// Event, EventTarget (event-target-shim), CustomEvent, AbortController and AbortSignal. Evaluated
// lazily (web/modules.js).
//
// AbortController/AbortSignal are written here on the library's EventTarget: event-target-shim
// stopped shipping them, and the abort-controller package that did predates `reason`,
// AbortSignal.timeout/any and throwIfAborted. Timeouts run on the call's own timers (lazy.js hooks),
// so they fire within a call and are gone when it ends. fetch reads a signal's state through
// abortState/onAbort below, never through getters or listeners a bundle can replace on our signals.
import {
  Event,
  EventTarget,
  defineEventAttribute,
  setErrorHandler,
  setWarningHandler,
} from "event-target-shim";
import {
  ArrayPush,
  MathMin,
  NumberCtor,
  NumberIsFinite,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
  ReflectApply,
  SetAdd,
  SetCtor,
  SetDelete,
  SetHas,
  SetIteratorNext,
  SetValues,
  TypeErrorCtor,
  WeakMapCtor,
  WeakMapGet,
  WeakMapSet,
  list,
} from "../intrinsics.js";
import { DOMException } from "./dom-exception.js";
import { hooks, loaded } from "./lazy.js";

// A listener that throws is reported as an uncaught error in the call's logs (Node reports it as an
// uncaught exception); the library's duplicate-listener warnings are not part of any standard.
setErrorHandler((error) => {
  if (hooks.reportError !== null) hooks.reportError(error);
});
setWarningHandler(() => {});

const dispatch = EventTarget.prototype.dispatchEvent;
// As WebIDL (and Node) tag them: "[object EventTarget]", "[object Event]".
function tag(ctor, name) {
  if (!ObjectGetOwnPropertyDescriptor(ctor.prototype, Symbol.toStringTag)) {
    ObjectDefineProperty(ctor.prototype, Symbol.toStringTag, { value: name, configurable: true });
  }
}
tag(EventTarget, "EventTarget");
tag(Event, "Event");

class CustomEvent extends Event {
  #detail;
  constructor(type, eventInitDict = undefined) {
    super(type, eventInitDict);
    const detail = eventInitDict !== null && eventInitDict !== undefined ? eventInitDict.detail : undefined;
    this.#detail = detail === undefined ? null : detail;
  }
  get detail() {
    return this.#detail;
  }
  get [Symbol.toStringTag]() {
    return "CustomEvent";
  }
}

const abortError = () => new DOMException("This operation was aborted", "AbortError");
const timeoutError = () => new DOMException("The operation was aborted due to timeout", "TimeoutError");

const TOKEN = {};
const states = new WeakMapCtor(); // AbortSignal -> its state, below

function setValues(set) {
  const out = list();
  const it = SetValues(set);
  for (;;) {
    const step = SetIteratorNext(it);
    if (step.done) return out;
    ArrayPush(out, step.value);
  }
}

class AbortSignal extends EventTarget {
  constructor(token = undefined) {
    if (token !== TOKEN) throw new TypeErrorCtor("Illegal constructor");
    super();
    WeakMapSet(states, this, {
      __proto__: null,
      aborted: false,
      reason: undefined,
      algorithms: new SetCtor(),
      dependent: false,
      sources: new SetCtor(),
      dependents: new SetCtor(),
    });
  }
  get aborted() {
    return stateOf(this).aborted;
  }
  get reason() {
    return stateOf(this).reason;
  }
  throwIfAborted() {
    const state = stateOf(this);
    if (state.aborted) throw state.reason;
  }
  static abort(reason = undefined) {
    const signal = new AbortSignal(TOKEN);
    const state = WeakMapGet(states, signal);
    state.aborted = true;
    state.reason = reason === undefined ? abortError() : reason;
    return signal;
  }
  static timeout(milliseconds) {
    const ms = NumberCtor(milliseconds);
    if (!NumberIsFinite(ms) || ms < 0) {
      throw new TypeErrorCtor(`AbortSignal.timeout: ${ms} is outside the range of an unsigned long long`);
    }
    const signal = new AbortSignal(TOKEN);
    hooks.setTimer(() => signalAbort(signal, timeoutError()), MathMin(ms - (ms % 1), 2147483647));
    return signal;
  }
  static any(signals) {
    const given = list();
    for (const signal of signals) {
      if (WeakMapGet(states, signal) === undefined) {
        throw new TypeErrorCtor(`AbortSignal.any: signals[${given.length}] is not an AbortSignal`);
      }
      ArrayPush(given, signal);
    }
    return dependentSignal(given);
  }
  get [Symbol.toStringTag]() {
    return "AbortSignal";
  }
}
defineEventAttribute(AbortSignal.prototype, "abort");

// The standard's "create a dependent abort signal" from a list of our signals.
function dependentSignal(given) {
    const result = new AbortSignal(TOKEN);
    const state = WeakMapGet(states, result);
    for (let i = 0; i < given.length; i++) {
      const source = WeakMapGet(states, given[i]);
      if (source.aborted) {
        state.aborted = true;
        state.reason = source.reason;
        return result;
      }
    }
    state.dependent = true;
    for (let i = 0; i < given.length; i++) {
      const source = WeakMapGet(states, given[i]);
      const roots = source.dependent ? setValues(source.sources) : [given[i]];
      for (let j = 0; j < roots.length; j++) {
        SetAdd(state.sources, roots[j]);
        SetAdd(WeakMapGet(states, roots[j]).dependents, result);
      }
    }
    return result;
}

function stateOf(signal) {
  const state = WeakMapGet(states, signal);
  if (state === undefined) throw new TypeErrorCtor("Illegal invocation: not an AbortSignal");
  return state;
}

// The standard's "signal abort": dependents get the reason first, then each runs its abort steps
// (the runtime's algorithms, then the `abort` event).
function signalAbort(signal, reason) {
  const state = WeakMapGet(states, signal);
  if (state.aborted) return;
  state.aborted = true;
  state.reason = reason;
  const toAbort = list();
  const dependents = setValues(state.dependents);
  for (let i = 0; i < dependents.length; i++) {
    const dep = WeakMapGet(states, dependents[i]);
    if (dep.aborted) continue;
    dep.aborted = true;
    dep.reason = reason;
    ArrayPush(toAbort, dependents[i]);
  }
  runAbortSteps(signal);
  for (let i = 0; i < toAbort.length; i++) runAbortSteps(toAbort[i]);
}

function runAbortSteps(signal) {
  const state = WeakMapGet(states, signal);
  const algorithms = setValues(state.algorithms);
  state.algorithms = new SetCtor();
  for (let i = 0; i < algorithms.length; i++) {
    try {
      algorithms[i](state.reason);
    } catch (error) {
      if (hooks.reportError !== null) hooks.reportError(error);
    }
  }
  try {
    ReflectApply(dispatch, signal, [new Event("abort")]);
  } catch (error) {
    if (hooks.reportError !== null) hooks.reportError(error);
  }
}

class AbortController {
  #signal = new AbortSignal(TOKEN);
  get signal() {
    return this.#signal;
  }
  abort(reason = undefined) {
    signalAbort(this.#signal, reason === undefined ? abortError() : reason);
  }
  get [Symbol.toStringTag]() {
    return "AbortController";
  }
}

// ---------------------------------------------------------------- private API for fetch

// {aborted, reason} of one of our signals, or null for anything else.
function abortState(signal) {
  const state = WeakMapGet(states, signal);
  return state === undefined ? null : state;
}

// Runs `algorithm(reason)` once when our signal aborts; returns the function that unsubscribes.
function onAbort(signal, algorithm) {
  const state = WeakMapGet(states, signal);
  if (state === undefined || state.aborted) return () => {};
  const once = (reason) => algorithm(reason);
  SetAdd(state.algorithms, once);
  return () => {
    if (SetHas(state.algorithms, once)) SetDelete(state.algorithms, once);
  };
}

// A new signal that follows `signal` (ours): what Request.signal is for a request made with one.
function followingSignal(signal) {
  const given = list();
  if (signal !== null && signal !== undefined) ArrayPush(given, signal);
  return dependentSignal(given);
}

loaded.events = {
  __proto__: null,
  globals: { __proto__: null, Event, EventTarget, CustomEvent, AbortController, AbortSignal },
  abortState,
  onAbort,
  followingSignal,
  abortError,
};
