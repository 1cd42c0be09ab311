// Swagger UI from the shipped bundle; a logged-in browser's "Try it out" sends the CSRF token.
(function () {
  "use strict";
  const root = document.getElementById("swagger-ui");
  const csrf = root.dataset.csrf;
  window.SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    requestInterceptor: function (request) {
      if (csrf && !/^(GET|HEAD|OPTIONS)$/i.test(request.method || "GET")) {
        request.headers["X-CSRF-Token"] = csrf;
      }
      return request;
    },
  });
})();
