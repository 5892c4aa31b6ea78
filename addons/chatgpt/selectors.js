// Every selector and text the ChatGPT driver reads, in one place. Each entry is a list, tried
// in order: the current page's first, then older or alternative forms (fallbacks), so a page
// change that keeps any one of them keeps the driver working. When ChatGPT changes its page,
// this table is the only thing to edit (and the replica, sandbox/replicas/chatgpt.py).
const SELECTORS = {
  composer: ["#prompt-textarea[contenteditable='true']", "div.ProseMirror[contenteditable='true']", "form [contenteditable='true'][role='textbox']"],
  send: ["button[data-testid='send-button']", "button[data-testid='composer-send-button']", "button#composer-submit-button[aria-label*='Send']", "button[aria-label='Send prompt']"],
  stop: ["button[data-testid='stop-button']", "button[aria-label*='Stop']"],
  assistantTurn: ["[data-message-author-role='assistant']", "[data-testid^='conversation-turn-'] .agent-turn"],
  image: ["img[alt*='Generated image']", "img[src*='oaiusercontent']", "img[src*='sdmntpr']", "img[src^='blob:']"],
  error: ["[data-testid='message-error']", ".text-token-text-error", "div[class*='text-red']"],
  login: ["button[data-testid='login-button']", "a[href*='/auth/login']", "[data-testid='welcome-back-login']"],
  newChat: ["a[data-testid='create-new-chat-button']", "button[aria-label='New chat']"],
};
// What notices say, as ChatGPT words them.
const TEXTS = {
  rateLimited: /(hit|reached).*(limit)|too many requests|try again (later|in)/i,
  loggedOut: /log(ged)? ?(in|out)|session (has )?expired|sign ?in/i,
  refused: /(can(no|')t|unable to) (help|create|generate|make)|content polic|violat/i,
};
// The smallest size (px) of a picture that counts as a generated image, not an icon.
const MIN_IMAGE_PX = 100;
SemantestAddon.provide("chatgpt/selectors", { SELECTORS, TEXTS, MIN_IMAGE_PX });
