// Lazily installed globals: an accessor on globalThis that evaluates the implementation on first
// read and then replaces itself with a plain writable data property (assigning first also works),
// so a bundle that never touches the global pays nothing for it.
const defineProperty = Object.defineProperty;

export function defineLazyGlobal(target, name, load) {
  defineProperty(target, name, {
    configurable: true,
    enumerable: false,
    get() {
      const value = load();
      defineProperty(target, name, { value, writable: true, enumerable: false, configurable: true });
      return value;
    },
    set(value) {
      defineProperty(target, name, { value, writable: true, enumerable: false, configurable: true });
    },
  });
}
