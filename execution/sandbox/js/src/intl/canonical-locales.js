// Intl.getCanonicalLocales from the module intl-locale's polyfill imports anyway (the package's
// polyfill-force.js inlines a second copy of its 150 kB of alias tables).
import { getCanonicalLocales } from "@formatjs/intl-getcanonicallocales";

Object.defineProperty(Intl, "getCanonicalLocales", { value: getCanonicalLocales, writable: true, enumerable: false, configurable: true });
