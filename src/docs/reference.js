// The API reference page (/docs/): Swagger UI, bundled at build time from swagger-ui-dist,
// reading this deployment's /openapi.json. Nothing is fetched from another host (no validator
// badge). "Try it out" sends requests from this page to this origin with the token you enter.
window.addEventListener("load", () => {
  window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#reference",
    validatorUrl: null,
    deepLinking: true,
    displayOperationId: true,
    docExpansion: "list",
    tryItOutEnabled: false,
  });
});
