// 联办件, live: a WebSocket sends the joint case whenever one of its parts changes;
// the page fetches itself again and swaps in the summary and the parts table.
// Without this script the page shows the parts as of its loading (reload to update).

import { follow } from "./live.js";

const page = document.getElementById("joint-page");

function setText(id, text) {
  const element = document.getElementById(id);
  if (element) element.textContent = text;
}

async function refresh() {
  const response = await fetch(window.location.pathname, { headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const id of ["joint-summary", "joint-parts"]) {
    const now = document.getElementById(id);
    const next = fresh.getElementById(id);
    if (now && next) now.replaceWith(document.adoptNode(next));
  }
}

let last = null;
function connect() {
  follow(page.dataset.live, {
    open() {
      last = null;
      setText("live-status", "（实时更新中）");
    },
    async message(news) {
      const shown = JSON.stringify([news.state, news.parts.map((p) => [p.state, p.outcome])]);
      if (last === null) {
        await refresh(); // what changed between loading the page and connecting
      } else if (shown !== last) {
        await refresh();
        document.getElementById("joint-notice")?.remove(); // it told of the previous step
        setText("live-announce", `联办件已更新：${news.state_zh}；` +
          news.parts.map((p, i) => `分件 ${i + 1} ${p.state_zh}`).join("，"));
        setText("live-status", "（实时更新中）");
      }
      last = shown;
    },
    close() {
      setText("live-status", "（实时更新已中断，正在重新连接；也可刷新页面查看最新状态）");
    },
  });
}

if (page) connect();
