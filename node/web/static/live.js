// What the live pages (the window's case page, the desk) share: telling screen
// readers and the status line what changed, and not replacing a form being typed in.

export function announce(text) {
  const region = document.getElementById("live-announce");
  if (region) region.textContent = text;
}

export function setStatus(text) {
  const status = document.getElementById("live-status");
  if (status) status.textContent = text;
}

export function typingIn(part) {
  const active = document.activeElement;
  return part && active && part.contains(active) && active.matches("input, textarea, select");
}
