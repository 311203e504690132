// Entry of the Intl build (build.mjs): evaluated as a classic script by intl/index.js on first use,
// with the global `Intl` already the object to fill.
import "./polyfills.js";
import { Collator } from "./collator.js";

Object.defineProperty(Intl, "Collator", { value: Collator, writable: true, enumerable: false, configurable: true });
