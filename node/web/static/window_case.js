// 办件详情, live: a WebSocket tells the page the case's state whenever it changes;
// the page then fetches itself again and swaps in the parts that changed, so the
// clerk sees a 补正 request, the acceptance or the outcome without reloading.
// Without this script the page shows the state as of its loading (reload to update).

import { caseNews, follow, setStatus, typingIn } from "./live.js";
import { enhance } from "./window_upload.js";

const page = document.getElementById("case-page");

async function refresh(stateChanged) {
  const response = await fetch(window.location.pathname, { headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  const ids = ["case-summary", "case-timeline"];
  if (stateChanged || !typingIn(document.getElementById("case-actions"))) ids.push("case-actions");
  for (const id of ids) {
    const now = document.getElementById(id);
    const next = fresh.getElementById(id);
    if (now && next) now.replaceWith(document.adoptNode(next));
  }
  const freshPage = fresh.getElementById("case-page");
  if (freshPage) {
    page.dataset.state = freshPage.dataset.state;
    page.dataset.receipts = freshPage.dataset.receipts;
  }
  enhance(page);
  togglePost();
}

// 邮寄 needs the courier and the tracking number; other modes hide those fields.
function togglePost() {
  const form = document.getElementById("deliver-form");
  if (!form) return;
  const chosen = form.querySelector("input[name=d_mode]:checked");
  for (const field of form.querySelectorAll(".post-only")) {
    field.hidden = !chosen || chosen.value !== "post";
  }
}

document.addEventListener("change", (event) => {
  if (event.target.name === "d_mode") togglePost();
});

function connect() {
  follow(page.dataset.live, {
    open() {
      setStatus("（实时更新中）");
    },
    async message(news) {
      await caseNews(page, news, refresh);
    },
    close() {
      setStatus("（实时更新已中断，正在重新连接；也可刷新页面查看最新状态）");
    },
  });
}

if (page && "WebSocket" in window) {
  togglePost();
  connect();
}
