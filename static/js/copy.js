// Copy buttons: <button data-copy-target="ID"> copies the text of the element with that id.
// Delegated from the document, so buttons that htmx swaps in work too.
(function () {
  "use strict";

  function selectText(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copied(button) {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = label; }, 1500);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-copy-target]");
    if (!button) return;
    const source = document.getElementById(button.dataset.copyTarget);
    if (!source) return;
    const text = source.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button); }, function () { selectText(source); });
    } else {
      // Plain-HTTP pages have no clipboard API: select the text so Ctrl+C copies it.
      selectText(source);
      button.textContent = "Press Ctrl+C";
    }
  });
})();
