// Scans for the window forms: dropped or chosen files are streamed to the node one by
// one as soon as they are picked (progress shown), and the form then carries only
// their object names. Without this script the file input goes with the form itself.

const MEDIA = { pdf: "application/pdf", jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png",
  ofd: "application/ofd" };

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function mediaType(file) {
  if (file.type) return file.type;
  const extension = file.name.split(".").pop().toLowerCase();
  return MEDIA[extension] || "application/octet-stream";
}

function sizeText(bytes) {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MB` : `${Math.max(1, Math.floor(bytes / 1024))} KB`;
}

// One upload: resolves with the node's answer, reports progress as it goes.
function send(url, file, onProgress) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest(); // fetch() cannot report upload progress
    request.open("POST", url);
    request.setRequestHeader("X-CSRF-Token", csrfToken());
    request.setRequestHeader("Content-Type", mediaType(file));
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    request.addEventListener("load", () => {
      let answer = {};
      try {
        answer = JSON.parse(request.responseText);
      } catch {
        answer = { error: "上传未成功（节点返回了无法识别的答复），请重新选择该文件上传。" };
      }
      resolve({ ok: request.status === 201, status: request.status, answer });
    });
    request.addEventListener("error", () => resolve({ ok: false, status: 0, answer: {
      error: "网络中断，上传未完成。请检查网络后重新选择该文件上传。" } }));
    request.send(file);
  });
}

function enhanceZone(zone) {
  if (zone.dataset.enhanced) return;
  zone.dataset.enhanced = "1";
  const form = zone.closest("form");
  const input = zone.querySelector(".scan-file");
  const select = zone.querySelector(".scan-for");
  const list = zone.querySelector(".scan-list");
  const status = zone.querySelector(".scan-status");
  const target = zone.querySelector(".drop-target");
  let pending = 0;

  const submitButtons = () => (form ? form.querySelectorAll("button[type=submit]") : []);
  const busy = (delta) => {
    pending += delta;
    for (const button of submitButtons()) button.disabled = pending > 0;
    zone.classList.toggle("uploading", pending > 0);
  };

  async function upload(file) {
    const name = select && select.value ? select.value : file.name;
    const item = document.createElement("li");
    item.className = "scan-item";
    const label = document.createElement("span");
    label.className = "scan-name";
    label.textContent = `${name}（${file.name}，${sizeText(file.size)}）`;
    const progress = document.createElement("progress");
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute("aria-label", `${file.name} 上传进度`);
    const note = document.createElement("span");
    note.className = "hint scan-note";
    note.textContent = "上传中 0%";
    item.append(label, " ", progress, " ", note);
    list.append(item);
    busy(+1);
    const url = `${zone.dataset.upload}?name=${encodeURIComponent(name)}`;
    const result = await send(url, file, (loaded, total) => {
      const percent = Math.floor((loaded * 100) / total);
      progress.value = percent;
      note.textContent = `上传中 ${percent}%`;
    });
    busy(-1);
    if (result.ok) {
      progress.value = 100;
      item.classList.add("scan-done");
      note.textContent = `${result.answer.media} · ${result.answer.size} · 已上传`;
      const hidden = document.createElement("input");
      hidden.type = "hidden";
      hidden.name = "scans";
      hidden.value = result.answer.object;
      item.append(hidden);
      status.textContent = `${file.name} 已上传。`;
    } else {
      item.classList.add("scan-failed");
      progress.remove();
      note.textContent = result.answer.error || "上传未成功，请重新选择该文件上传。";
      status.textContent = `${file.name} 上传未成功：${note.textContent}`;
    }
  }

  async function uploadAll(files) {
    for (const file of files) await upload(file);
  }

  input.addEventListener("change", () => {
    const files = Array.from(input.files);
    input.value = ""; // sent already: the form must not carry the file a second time
    uploadAll(files);
  });
  for (const name of ["dragenter", "dragover"]) {
    target.addEventListener(name, (event) => {
      event.preventDefault();
      target.classList.add("drag-over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    target.addEventListener(name, () => target.classList.remove("drag-over"));
  }
  target.addEventListener("drop", (event) => {
    event.preventDefault();
    uploadAll(Array.from(event.dataTransfer.files));
  });
  target.classList.add("drop-ready");
}

export function enhance(root = document) {
  for (const zone of root.querySelectorAll(".scan-zone")) enhanceZone(zone);
}

enhance();

// A refused form: focus goes to the first field to fix (its message is read with it
// through aria-describedby), so a keyboard user corrects it at once; the summary above
// lists every problem. Without this script the summary's links lead to each field.
function focusFirstError() {
  if (!document.getElementById("error-summary")) return;
  const first = document.querySelector("form [aria-invalid=true]");
  (first ?? document.getElementById("error-summary")).focus();
}

focusFirstError();
