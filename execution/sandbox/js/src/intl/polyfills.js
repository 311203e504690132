// The ECMA-402 polyfills from FormatJS with their locale data, evaluated into globalThis.Intl (which
// intl/index.js has made a plain object first). Locales carried: en (en-US), en-GB, de (de-DE);
// any other locale resolves to the best of these by the standard's lookup, i.e. en when nothing
// matches. Time zones: UTC and the few in intl/zones.js (see build.mjs).
import "./canonical-locales.js";
import "@formatjs/intl-locale/polyfill-force.js";
import "@formatjs/intl-pluralrules/polyfill-force.js";
import "@formatjs/intl-pluralrules/locale-data/en.js";
import "@formatjs/intl-pluralrules/locale-data/de.js";
import "@formatjs/intl-numberformat/polyfill-force.js";
import "@formatjs/intl-numberformat/locale-data/en.js";
import "@formatjs/intl-numberformat/locale-data/en-GB.js";
import "@formatjs/intl-numberformat/locale-data/de.js";
import "@formatjs/intl-datetimeformat/polyfill-force.js";
import "@formatjs/intl-datetimeformat/locale-data/en.js";
import "@formatjs/intl-datetimeformat/locale-data/en-GB.js";
import "@formatjs/intl-datetimeformat/locale-data/de.js";
import "lightfast-intl-zones";
import "@formatjs/intl-relativetimeformat/polyfill-force.js";
import "@formatjs/intl-relativetimeformat/locale-data/en.js";
import "@formatjs/intl-relativetimeformat/locale-data/en-GB.js";
import "@formatjs/intl-relativetimeformat/locale-data/de.js";
import "@formatjs/intl-listformat/polyfill-force.js";
import "@formatjs/intl-listformat/locale-data/en.js";
import "@formatjs/intl-listformat/locale-data/en-GB.js";
import "@formatjs/intl-listformat/locale-data/de.js";
