/* Gatehouse audit page: filter the events table by any text it shows. */
(function () {
  "use strict";
  var form = document.getElementById("audit-filter");
  var rows = Array.prototype.slice.call(document.querySelectorAll("#events tbody tr"));
  var text = rows.map(function (r) { return r.textContent.toLowerCase(); });
  function apply() {
    var q = form.q.value.trim().toLowerCase();
    rows.forEach(function (r, i) { r.hidden = !!q && text[i].indexOf(q) < 0; });
  }
  form.addEventListener("input", apply);
  form.addEventListener("submit", function (e) { e.preventDefault(); apply(); });
})();
