// The desk's pages, live: a WebSocket says when the queue or the case changed; the
// page then fetches itself again and swaps in the parts marked data-live-part, so a
// reviewer sees a new application, a supplement or the department's progress without
// reloading. A part holding a form the user is typing in is left alone until the
// case's state changes. Without this script the pages show the state as of loading.

import { announce, caseNews, follow, setStatus, typingIn } from "./live.js";

const page = document.getElementById("case-page") || document.getElementById("queue-page");

async function refresh(stateChanged) {
  const response = await fetch(window.location.pathname + window.location.search,
    { headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const part of document.querySelectorAll("[data-live-part]")) {
    if (!part.id) continue;
    if ("formPart" in part.dataset && !stateChanged && typingIn(part)) continue;
    const next = fresh.getElementById(part.id);
    if (next) part.replaceWith(document.adoptNode(next));
  }
  const freshPage = fresh.getElementById(page.id);
  if (freshPage) {
    page.dataset.state = freshPage.dataset.state || "";
    page.dataset.receipts = freshPage.dataset.receipts || "";
  }
}

let first = true;
function connect() {
  follow(page.dataset.live, {
    open() {
      first = true;
      setStatus("（实时更新中）");
    },
    async message(news) {
      if (page.id === "queue-page") {
        if (!first) {
          await refresh(true);
          announce("待办队列已更新");
        }
        first = false;
        setStatus("（实时更新中）");
        return;
      }
      await caseNews(page, news, refresh);
    },
    close() {
      setStatus("（实时更新已中断，正在重新连接；也可刷新页面查看最新状态）");
    },
  });
}

// A scan opened from the list: bring the viewer into sight and give it focus.
const viewer = document.getElementById("viewer");
if (viewer && window.location.hash === "#viewer") viewer.focus();

if (page) connect();
