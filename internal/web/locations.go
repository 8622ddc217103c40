package web

// locationRoutes registers the locations pages (none yet).
func (s *Server) locationRoutes() []route { return nil }
