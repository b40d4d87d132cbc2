// The 打印回执 button of the 收件回执 page (Ctrl+P does the same without this script).
const button = document.getElementById("print-receipt");
if (button) {
  button.addEventListener("click", () => window.print());
}
