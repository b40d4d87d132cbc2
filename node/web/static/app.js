// Comfort for the staff pages: the 大字号 (larger text) toggle, remembered in this
// browser. Pages work without this script; it only adds to them.

const KEY = "tongban.largeText";

function apply(on) {
  document.documentElement.classList.toggle("large-text", on);
  const button = document.getElementById("large-text");
  if (button) {
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.textContent = on ? "标准字号" : "大字号";
  }
}

function stored() {
  try {
    return window.localStorage.getItem(KEY) === "1";
  } catch {
    return false; // storage blocked: the toggle still works for this page
  }
}

function remember(on) {
  try {
    window.localStorage.setItem(KEY, on ? "1" : "0");
  } catch {
    // storage blocked: nothing to remember it in
  }
}

apply(stored());

const button = document.getElementById("large-text");
if (button) {
  button.addEventListener("click", () => {
    const on = !document.documentElement.classList.contains("large-text");
    apply(on);
    remember(on);
  });
}

// The skip link moves focus, not only the view, so Tab continues inside the content.
const skip = document.querySelector(".skip-link");
const main = document.getElementById("main");
if (skip && main) {
  skip.addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
}
