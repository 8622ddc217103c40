package web

// groupRoutes registers the groups pages (none yet).
func (s *Server) groupRoutes() []route { return nil }
