// A reviewer sees, on every page, how many virtual-window requests wait to be taken:
// a badge on the 视频窗口 link, kept current over the /video/live socket.

import { follow } from "./live.js";

const badge = document.getElementById("video-badge");

function connect() {
  follow("/video/live", {
    message({ waiting }) {
      badge.textContent = waiting ? `${waiting} 个请求` : "";
      badge.hidden = !waiting;
    },
  });
}

if (badge && !document.getElementById("video-list-page")) connect();
