package api

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is maintained by hand next to the routes; TestOpenAPIMatchesRoutes
// keeps the two in step.
//
//go:embed openapi.json
var openAPIDoc []byte

func serveOpenAPI(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDoc)
	return nil
}
