/* Parley's small bit of browser code: the composer's keys and scrolling.
   Everything else is htmx (pages, partials, and the websocket's out-of-band swaps). */
(function () {
  "use strict";

  function composer() { return document.getElementById("composer-input"); }
  function messages() { return document.getElementById("messages"); }

  function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 120; }
  function scrollToEnd(el) { el.scrollTop = el.scrollHeight; }

  function autosize(textarea) {
    textarea.style.height = "auto";
    textarea.style.height = Math.min(textarea.scrollHeight, 240) + "px";
  }

  document.addEventListener("keydown", function (event) {
    var input = composer();
    if (event.target !== input || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    input.form.requestSubmit();
  });

  document.addEventListener("input", function (event) {
    if (event.target === composer()) autosize(event.target);
  });

  document.addEventListener("htmx:wsAfterSend", function (event) {
    var input = composer();
    if (input && event.target === input.form) {
      input.value = "";
      autosize(input);
      var list = messages();
      if (list) list._parleyFollow = true;
    }
  });

  var following = true;
  document.addEventListener("htmx:wsBeforeMessage", function () {
    var list = messages();
    following = !list || nearBottom(list) || list._parleyFollow;
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    var list = messages();
    if (list && following) { scrollToEnd(list); list._parleyFollow = false; }
  });

  document.addEventListener("htmx:wsOpen", function () { document.body.classList.remove("is-offline"); });
  document.addEventListener("htmx:wsClose", function () { document.body.classList.add("is-offline"); });

  function start() {
    var list = messages();
    if (list) scrollToEnd(list);
    var input = composer();
    if (input) input.focus();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
