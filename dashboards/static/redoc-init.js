// ReDoc from the shipped standalone bundle.
(function () {
  "use strict";
  const root = document.getElementById("redoc");
  window.Redoc.init(root.dataset.openapi, {}, root);
})();
