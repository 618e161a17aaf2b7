/* Gatehouse session page: expand or collapse every section, and open the sections around
   the exchange or tool call a link points at. */
(function () {
  "use strict";
  document.querySelectorAll("[data-expand]").forEach(function (b) {
    b.addEventListener("click", function () {
      var open = b.getAttribute("data-expand") === "open";
      document.querySelectorAll("details").forEach(function (d) { d.open = open; });
    });
  });
  function reveal() {
    if (location.hash.length < 2) return;
    var target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (!target) return;
    for (var p = target; p; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
    var article = target.closest ? target.closest("article.exchange") : null;
    document.querySelectorAll("article.exchange.target").forEach(function (a) { a.classList.remove("target"); });
    if (article) article.classList.add("target");
    target.scrollIntoView();
  }
  window.addEventListener("hashchange", reveal);
  reveal();
})();
