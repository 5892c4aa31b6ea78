// Every selector and text the Gemini driver reads, in one place; each entry is a list tried in
// order (current page first, then fallbacks). Edit this table (and the replica,
// sandbox/replicas/gemini.py) when Gemini changes its page.
const SELECTORS = {
  composer: ["rich-textarea .ql-editor[contenteditable='true']", "div.ql-editor[contenteditable='true']", "[contenteditable='true'][role='textbox']"],
  send: ["button.send-button", "button[aria-label*='Send message']", "button[aria-label*='Send']"],
  stop: ["button.send-button.stop", "button[aria-label*='Stop response']"],
  response: ["model-response", "[data-test-id='model-response']", ".model-response"],
  responseText: ["message-content .markdown", "message-content", ".model-response-text"],
  image: ["generated-image img", "img.image", "img[src*='googleusercontent.com']", "img[src*='lh3.google.com']"],
  error: [".response-error", "[data-test-id='error-message']"],
  login: ["a[aria-label='Sign in']", "a[href*='accounts.google.com/ServiceLogin']", "button[data-test-id='sign-in-button']"],
  pending: ["pending-request", ".response-pending", "model-response[aria-busy='true']"],
};
const TEXTS = {
  rateLimited: /(reached|hit) (your|the) (daily )?limit|too many requests|try again (later|in)/i,
  loggedOut: /sign in|signed out|session (has )?expired/i,
  refused: /(can(no|')t|unable to) (help|create|generate|make)|polic(y|ies)|not able to create/i,
};
const MIN_IMAGE_PX = 100;
SemantestAddon.provide("gemini/selectors", { SELECTORS, TEXTS, MIN_IMAGE_PX });
