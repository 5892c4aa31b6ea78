// ESLint (flat config) for the JavaScript we ship: the MV3 extension and the addons.
// `make lint` runs it; `npm install` (done by `make setup`) brings eslint itself.
import js from "@eslint/js";
import globals from "globals";

const chrome = { chrome: "readonly" };

export default [
  js.configs.recommended,
  {
    // The service worker, its modules and the options page: ES modules.
    files: ["extension_bridge/extension/**/*.js"],
    ignores: ["extension_bridge/extension/addon_runtime.js"],
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: "module",
      globals: { ...globals.browser, ...globals.serviceworker, ...chrome },
    },
  },
  {
    // Injected as user scripts: plain scripts in the page's USER_SCRIPT world.
    files: ["extension_bridge/extension/addon_runtime.js", "addons/**/*.js"],
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: "script",
      globals: { ...globals.browser, ...chrome, SemantestAddon: "readonly" },
    },
  },
  {
    rules: {
      // Drivers implement an interface: a method need not use every argument it is given.
      "no-unused-vars": ["error", { args: "none", caughtErrors: "none" }],
    },
  },
];
