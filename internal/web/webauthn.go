package web

// webauthnRoutes registers the webauthn pages (none yet).
func (s *Server) webauthnRoutes() []route { return nil }
