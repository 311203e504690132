// node:assert: the common assertions, hand-written (the npm `assert` package pulls a dozen
// dependencies for what is a few comparisons here); deep equality is util's isDeepStrictEqual.
// assert/strict is the same module: deepEqual compares strictly (equal stays ==).
import nodeUtil, { isDeepStrictEqual } from "./util.js";

class AssertionError extends Error {
  constructor(options) {
    super(options.message);
    this.name = "AssertionError";
    this.code = "ERR_ASSERTION";
    this.actual = options.actual;
    this.expected = options.expected;
    this.operator = options.operator;
    this.generatedMessage = options.generated === true;
  }
}

function fail(actual, expected, message, operator, defaultMessage) {
  if (message instanceof Error) throw message;
  throw new AssertionError({
    message: message !== undefined ? String(message) : defaultMessage(),
    actual,
    expected,
    operator,
    generated: message === undefined,
  });
}

const show = (v) => nodeUtil.inspect(v);

function ok(value, message) {
  if (!value) {
    fail(value, true, message, "==", () =>
      arguments.length === 0 ? "No value argument passed to `assert.ok()`" : `The expression evaluated to a falsy value:\n\n  assert.ok(${show(value)})\n`,
    );
  }
}

function matches(error, expected) {
  if (expected === undefined) return true;
  if (typeof expected === "function") {
    if (expected.prototype !== undefined && error instanceof expected) return true;
    if (Error.isPrototypeOf(expected) || expected === Error) return false;
    return expected.call({}, error) === true;
  }
  if (expected instanceof RegExp) return expected.test(String(error));
  if (typeof expected === "object" && expected !== null) {
    return Object.keys(expected).every((k) =>
      expected[k] instanceof RegExp && typeof error[k] === "string" ? expected[k].test(error[k]) : isDeepStrictEqual(error[k], expected[k]),
    );
  }
  return false;
}

const assert = (value, message) => ok(value, message);
Object.assign(assert, {
  AssertionError,
  ok,
  fail(message = "Failed") {
    if (message instanceof Error) throw message;
    throw new AssertionError({ message, operator: "fail" });
  },
  equal(actual, expected, message) {
    if (!(actual == expected || (actual !== actual && expected !== expected))) {
      fail(actual, expected, message, "==", () => `${show(actual)} == ${show(expected)}`);
    }
  },
  notEqual(actual, expected, message) {
    if (actual == expected || (actual !== actual && expected !== expected)) {
      fail(actual, expected, message, "!=", () => `${show(actual)} != ${show(expected)}`);
    }
  },
  strictEqual(actual, expected, message) {
    if (!Object.is(actual, expected)) {
      fail(actual, expected, message, "strictEqual", () => `Expected values to be strictly equal:\n\n${show(actual)} !== ${show(expected)}\n`);
    }
  },
  notStrictEqual(actual, expected, message) {
    if (Object.is(actual, expected)) {
      fail(actual, expected, message, "notStrictEqual", () => `Expected "actual" to be strictly unequal to: ${show(expected)}`);
    }
  },
  deepStrictEqual(actual, expected, message) {
    if (!isDeepStrictEqual(actual, expected)) {
      fail(actual, expected, message, "deepStrictEqual", () => `Expected values to be strictly deep-equal:\n${show(actual)}\n\nshould equal\n\n${show(expected)}`);
    }
  },
  notDeepStrictEqual(actual, expected, message) {
    if (isDeepStrictEqual(actual, expected)) {
      fail(actual, expected, message, "notDeepStrictEqual", () => `Expected "actual" not to be strictly deep-equal to: ${show(expected)}`);
    }
  },
  match(string, regexp, message) {
    if (typeof string !== "string" || !regexp.test(string)) {
      fail(string, regexp, message, "match", () => `The input did not match the regular expression ${String(regexp)}. Input:\n\n${show(string)}\n`);
    }
  },
  doesNotMatch(string, regexp, message) {
    if (typeof string === "string" && regexp.test(string)) {
      fail(string, regexp, message, "doesNotMatch", () => `The input was expected to not match the regular expression ${String(regexp)}. Input:\n\n${show(string)}\n`);
    }
  },
  throws(fn, expected, message) {
    if (typeof expected === "string") [message, expected] = [expected, undefined];
    try {
      fn();
    } catch (error) {
      if (!matches(error, expected)) throw error;
      return;
    }
    fail(undefined, expected, message, "throws", () => "Missing expected exception.");
  },
  doesNotThrow(fn, message) {
    try {
      fn();
    } catch (error) {
      fail(error, undefined, typeof message === "string" ? message : undefined, "doesNotThrow", () => `Got unwanted exception.\nActual message: "${error && error.message}"`);
    }
  },
  async rejects(promiseOrFn, expected, message) {
    if (typeof expected === "string") [message, expected] = [expected, undefined];
    try {
      await (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn);
    } catch (error) {
      if (!matches(error, expected)) throw error;
      return;
    }
    fail(undefined, expected, message, "rejects", () => "Missing expected rejection.");
  },
  async doesNotReject(promiseOrFn, message) {
    try {
      await (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn);
    } catch (error) {
      fail(error, undefined, message, "doesNotReject", () => `Got unwanted rejection.\nActual message: "${error && error.message}"`);
    }
  },
  ifError(value) {
    if (value !== null && value !== undefined) throw value instanceof Error ? value : new AssertionError({ message: `ifError got unwanted exception: ${show(value)}` });
  },
});
assert.deepEqual = assert.deepStrictEqual;
assert.notDeepEqual = assert.notDeepStrictEqual;
assert.strict = assert;
export default assert;
