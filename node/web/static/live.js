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

// A live page's socket to its node (path on this site): each JSON message goes to
// on.message, on.open is told of every (re)connection with the socket, on.close when it
// drops. It connects again, waiting longer each time (1 s, doubling up to 30 s), unless
// on.close returns false.
export function follow(path, on) {
  let delay = 1000;
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${window.location.host}${path}`);
    socket.addEventListener("open", () => {
      delay = 1000;
      if (on.open) on.open(socket);
    });
    socket.addEventListener("message", (event) => on.message(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      if (on.close && on.close() === false) return;
      window.setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }
  if ("WebSocket" in window) connect();
}

// A case page (the window's or the desk's) told of its case: fetch the page again when
// the state or the receipts changed, and say so.
export async function caseNews(page, news, refresh) {
  const stateChanged = news.state !== page.dataset.state;
  if (stateChanged || String(news.receipts) !== page.dataset.receipts) {
    await refresh(stateChanged);
    if (stateChanged) {
      document.getElementById("case-notice")?.remove(); // it told of the previous step
      announce(`办件状态已更新：${news.state_zh}`);
    }
  }
  setStatus("（实时更新中）");
}
